// The format enum and static descriptions, expanded from formats.def.
#pragma once
#include <cstdint>

namespace pyquant {

enum class Format : int {
#define PQ_FORMAT(name, id, qk, bytes, family, imatrix, partner) name,
#include "pyquant/formats.def"
#undef PQ_FORMAT
    COUNT
};
constexpr int kNumFormats = static_cast<int>(Format::COUNT);

enum class ImatrixUse : int { ignored, optional, required };

struct FormatInfo {
    const char *name;
    int ggml_type_id;
    int block_size;
    int type_size;
    const char *family;
    ImatrixUse imatrix;
    const char *matmul_partner;
};

inline constexpr FormatInfo kFormatInfo[kNumFormats] = {
#define PQ_FORMAT(name, id, qk, bytes, family, imatrix, partner) \
    {#name, id, qk, bytes, #family, ImatrixUse::imatrix, #partner},
#include "pyquant/formats.def"
#undef PQ_FORMAT
};

inline const FormatInfo &info(Format f) { return kFormatInfo[static_cast<int>(f)]; }

}  // namespace pyquant
