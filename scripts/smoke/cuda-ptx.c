/* Proves compute on a real GPU without a CUDA toolkit in the image: loads the driver's
 * libcuda.so.1 (mounted by nvhook), JIT-compiles a PTX kernel that squares indices,
 * runs it on device 0 and checks every result. Prints one line "compute: OK ..." or
 * "compute: FAIL ..." and exits 0 or 1. Built by scripts/fetch-smoke-debs.sh (or by
 * scripts/gpu-smoke.sh where gcc exists); needs only glibc. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext, *CUmodule, *CUfunction;
typedef unsigned long long CUdeviceptr;

static const char ptx[] =
    ".version 6.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    ".visible .entry square(.param .u64 out, .param .u32 n)\n"
    "{\n"
    "  .reg .pred %p;\n"
    "  .reg .b32 %r<6>;\n"
    "  .reg .b64 %rd<4>;\n"
    "  ld.param.u64 %rd1, [out];\n"
    "  ld.param.u32 %r1, [n];\n"
    "  mov.u32 %r2, %ctaid.x;\n"
    "  mov.u32 %r3, %ntid.x;\n"
    "  mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p, %r5, %r1;\n"
    "  @%p bra DONE;\n"
    "  cvta.to.global.u64 %rd2, %rd1;\n"
    "  mul.wide.u32 %rd3, %r5, 4;\n"
    "  add.s64 %rd2, %rd2, %rd3;\n"
    "  mul.lo.s32 %r2, %r5, %r5;\n"
    "  st.global.u32 [%rd2], %r2;\n"
    "DONE:\n"
    "  ret;\n"
    "}\n";

static void *lib;
static void *sym(const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        printf("compute: FAIL %s not in libcuda.so.1\n", name);
        exit(1);
    }
    return p;
}
#define CHECK(call)                                                   \
    do {                                                              \
        CUresult r_ = (call);                                         \
        if (r_ != 0) {                                                \
            printf("compute: FAIL %s returned %d\n", #call, r_);      \
            return 1;                                                 \
        }                                                             \
    } while (0)

int main(void) {
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        printf("compute: FAIL %s\n", dlerror());
        return 1;
    }
    CUresult (*cuInit)(unsigned) = sym("cuInit");
    CUresult (*cuDriverGetVersion)(int *) = sym("cuDriverGetVersion");
    CUresult (*cuDeviceGet)(CUdevice *, int) = sym("cuDeviceGet");
    CUresult (*cuDeviceGetName)(char *, int, CUdevice) = sym("cuDeviceGetName");
    CUresult (*cuCtxCreate)(CUcontext *, unsigned, CUdevice) = sym("cuCtxCreate_v2");
    CUresult (*cuModuleLoadData)(CUmodule *, const void *) = sym("cuModuleLoadData");
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *) = sym("cuModuleGetFunction");
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t) = sym("cuMemAlloc_v2");
    CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t) = sym("cuMemcpyDtoH_v2");
    CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                               unsigned, unsigned, void *, void **, void **) = sym("cuLaunchKernel");
    CUresult (*cuCtxSynchronize)(void) = sym("cuCtxSynchronize");

    enum { N = 4096 };
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction fn;
    CUdeviceptr buf;
    int version = 0;
    char name[128] = "";
    CHECK(cuInit(0));
    CHECK(cuDriverGetVersion(&version));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CHECK(cuModuleLoadData(&mod, ptx)); /* the JIT: libnvidia-ptxjitcompiler */
    CHECK(cuModuleGetFunction(&fn, mod, "square"));
    CHECK(cuMemAlloc(&buf, N * sizeof(unsigned)));
    unsigned n = N;
    void *params[] = {&buf, &n};
    CHECK(cuLaunchKernel(fn, N / 256, 1, 1, 256, 1, 1, 0, NULL, params, NULL));
    CHECK(cuCtxSynchronize());
    static unsigned out[N];
    CHECK(cuMemcpyDtoH(out, buf, sizeof out));
    for (unsigned i = 0; i < N; i++) {
        if (out[i] != i * i) {
            printf("compute: FAIL out[%u] = %u, expected %u\n", i, out[i], i * i);
            return 1;
        }
    }
    printf("compute: OK %s, CUDA driver %d.%d, %d squares computed by a JIT-compiled PTX kernel\n",
           name, version / 1000, (version % 1000) / 10, N);
    return 0;
}
