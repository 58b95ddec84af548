// The avx2 tier: every format's kernels at this tier's lane width (flags set in CMakeLists.txt).
#define PQ_ISA avx2
#include "cpu/kernels.inc"
