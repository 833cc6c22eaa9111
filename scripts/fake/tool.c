/* A driver tool stand-in (nvidia-debugdump, nvidia-cuda-mps-control): an ELF
 * executable, as the real ones are, that says which tool it is. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    (void)argc;
    const char *me = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    printf("%s synthetic\n", me);
    return 0;
}
