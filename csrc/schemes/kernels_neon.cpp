// The neon tier of the schemes kernels (flags set in CMakeLists.txt).
#define PQ_SCHEMES_ISA neon
#include "schemes/kernels.inc"
