// hllm's version, written only here: CMakeLists.txt reads these numbers for project().
#pragma once

#define HLLM_VERSION_MAJOR 0
#define HLLM_VERSION_MINOR 1
#define HLLM_VERSION_PATCH 0
#define HLLM_VERSION_STRING "0.1.0"

namespace hllm {

inline constexpr int VERSION_MAJOR = HLLM_VERSION_MAJOR;
inline constexpr int VERSION_MINOR = HLLM_VERSION_MINOR;
inline constexpr int VERSION_PATCH = HLLM_VERSION_PATCH;
inline constexpr const char* VERSION_STRING = HLLM_VERSION_STRING;

}  // namespace hllm
