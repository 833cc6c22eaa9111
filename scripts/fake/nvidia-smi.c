/* Synthetic nvidia-smi: linked against libnvidia-ml.so.1, so it only runs where the
 * driver library was injected and ldconfig made it findable. */
#include <stdio.h>
#include <string.h>

const char *nvmlFakeDriverVersion(void);
int nvmlFakeList(int verbose);

int main(int argc, char **argv) {
    int list = argc > 1 && strcmp(argv[1], "-L") == 0;
    if (!list)
        printf("NVIDIA-SMI (synthetic)  Driver Version: %s\n", nvmlFakeDriverVersion());
    int n = nvmlFakeList(!list);
    if (n == 0) {
        fprintf(stderr, "No devices were found\n");
        return 6;
    }
    return 0;
}
