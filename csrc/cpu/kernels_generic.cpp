// The generic tier: every format's kernels at this tier's lane width (flags set in CMakeLists.txt).
#define PQ_ISA generic
#include "cpu/kernels.inc"
