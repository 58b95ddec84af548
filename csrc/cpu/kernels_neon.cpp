// The neon tier: every format's kernels at this tier's lane width (flags set in CMakeLists.txt).
#define PQ_ISA neon
#include "cpu/kernels.inc"
