// Floating-point contraction off for the rest of the translation unit: include FIRST (before any
// other include) in a kernel file whose results must round like reference.py operation by
// operation (the step kernels, step_common.h). Under an AVX2 or AVX-512 target the compiler would
// otherwise fuse a*b + c into one FMA with one rounding instead of two.
#pragma once

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define VDE_NO_CONTRACT 1
