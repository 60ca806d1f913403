// The few CUDA runtime calls the addon makes itself, found in the libcudart the CUDA
// provider already loaded (never a second copy): copies between host memory and a
// tensor the provider allocated. Every call here finishes before it returns, so it
// is ordered after the run that wrote the tensor (onnxruntime synchronizes its stream
// at the end of a run) and before the next run that reads it.
#pragma once

#include <dlfcn.h>

#include <cstddef>
#include <cstring>
#include <string>

namespace cuda {

// cudaMemcpyKind
constexpr int kHostToDevice = 1;
constexpr int kDeviceToHost = 2;

struct Runtime {
  int (*memcpy)(void*, const void*, size_t, int) = nullptr;
  int (*memcpyAsync)(void*, const void*, size_t, int, void*) = nullptr;
  int (*streamSynchronize)(void*) = nullptr;
  int (*hostAlloc)(void**, size_t, unsigned) = nullptr;
  int (*freeHost)(void*) = nullptr;
};

// The loaded runtime's entry points; memcpy is null when no CUDA runtime is loaded.
inline const Runtime& runtime() {
  static Runtime found = [] {
    Runtime r;
    void* library = nullptr;
    for (const char* name : {"libcudart.so.13", "libcudart.so.12", "libcudart.so"}) {
      library = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
      if (library != nullptr) break;
    }
    auto symbol = [&](const char* name) { return library != nullptr ? dlsym(library, name) : dlsym(RTLD_DEFAULT, name); };
    r.memcpy = reinterpret_cast<decltype(r.memcpy)>(symbol("cudaMemcpy"));
    r.memcpyAsync = reinterpret_cast<decltype(r.memcpyAsync)>(symbol("cudaMemcpyAsync"));
    r.streamSynchronize = reinterpret_cast<decltype(r.streamSynchronize)>(symbol("cudaStreamSynchronize"));
    r.hostAlloc = reinterpret_cast<decltype(r.hostAlloc)>(symbol("cudaHostAlloc"));
    r.freeHost = reinterpret_cast<decltype(r.freeHost)>(symbol("cudaFreeHost"));
    return r;
  }();
  return found;
}

// Page-locked host memory, kept and grown between calls: a copy from it is one DMA at
// the bus's rate, where a copy from pageable memory is staged by the driver in small
// pieces (measured 7-9 GB/s on an H100 host against the bus's 50). Null when the
// runtime has no cudaHostAlloc or it failed; callers then copy from pageable memory.
inline void* staging(size_t bytes) {
  static void* buffer = nullptr;
  static size_t capacity = 0;
  const Runtime& r = runtime();
  if (bytes <= capacity) return buffer;
  if (r.hostAlloc == nullptr || r.freeHost == nullptr) return nullptr;
  if (buffer != nullptr) r.freeHost(buffer);
  buffer = nullptr;
  capacity = 0;
  size_t grown = bytes + bytes / 2;
  if (r.hostAlloc(&buffer, grown, 0) != 0) {
    buffer = nullptr;
    return nullptr;
  }
  capacity = grown;
  return buffer;
}

// Copies `count` rows of `rowBytes` from host `source` (row i at i·rowBytes) to device
// `target` at rows at[i], one copy per run of consecutive destination rows, through the
// page-locked staging buffer where there is one. Returns "" or what failed.
inline std::string WriteRows(void* target, const void* source, size_t rowBytes, const int32_t* at, size_t count) {
  const Runtime& r = runtime();
  if (r.memcpy == nullptr) return "cudaMemcpy was not found in the loaded CUDA runtime";
  const size_t bytes = rowBytes * count;
  void* pinned = r.memcpyAsync != nullptr && r.streamSynchronize != nullptr ? staging(bytes) : nullptr;
  const char* from = static_cast<const char*>(source);
  if (pinned != nullptr) {
    std::memcpy(pinned, source, bytes);
    from = static_cast<const char*>(pinned);
  }
  for (size_t i = 0; i < count;) {
    size_t run = 1;
    while (i + run < count && at[i + run] == at[i] + static_cast<int32_t>(run)) run++;
    char* to = static_cast<char*>(target) + static_cast<size_t>(at[i]) * rowBytes;
    // The legacy default stream (0): synchronized below, before the staging buffer is reused.
    int code = pinned != nullptr ? r.memcpyAsync(to, from + i * rowBytes, run * rowBytes, kHostToDevice, nullptr)
                                 : r.memcpy(to, from + i * rowBytes, run * rowBytes, kHostToDevice);
    if (code != 0) {
      if (pinned != nullptr) r.streamSynchronize(nullptr);
      return "cudaMemcpy to the device failed with CUDA error " + std::to_string(code);
    }
    i += run;
  }
  if (pinned != nullptr) {
    int code = r.streamSynchronize(nullptr);
    if (code != 0) return "cudaStreamSynchronize failed with CUDA error " + std::to_string(code);
  }
  return "";
}

}  // namespace cuda
