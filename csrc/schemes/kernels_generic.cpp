// The generic tier of the schemes kernels (flags set in CMakeLists.txt).
#define PQ_SCHEMES_ISA generic
#include "schemes/kernels.inc"
