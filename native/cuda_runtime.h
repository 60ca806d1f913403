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
  int (*hostRegister)(void*, size_t, unsigned) = nullptr;
  int (*hostUnregister)(void*) = nullptr;
};

// The loaded runtime's entry points; memcpy is null while no CUDA runtime is loaded
// (looked up again on the next call: the CUDA provider loads it with its first session).
inline const Runtime& runtime() {
  static Runtime found;
  if (found.memcpy != nullptr) return found;
  void* library = nullptr;
  for (const char* name : {"libcudart.so.13", "libcudart.so.12", "libcudart.so"}) {
    library = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
    if (library != nullptr) break;
  }
  auto symbol = [&](const char* name) { return library != nullptr ? dlsym(library, name) : dlsym(RTLD_DEFAULT, name); };
  Runtime r;
  r.memcpy = reinterpret_cast<decltype(r.memcpy)>(symbol("cudaMemcpy"));
  r.memcpyAsync = reinterpret_cast<decltype(r.memcpyAsync)>(symbol("cudaMemcpyAsync"));
  r.streamSynchronize = reinterpret_cast<decltype(r.streamSynchronize)>(symbol("cudaStreamSynchronize"));
  r.hostAlloc = reinterpret_cast<decltype(r.hostAlloc)>(symbol("cudaHostAlloc"));
  r.freeHost = reinterpret_cast<decltype(r.freeHost)>(symbol("cudaFreeHost"));
  r.hostRegister = reinterpret_cast<decltype(r.hostRegister)>(symbol("cudaHostRegister"));
  r.hostUnregister = reinterpret_cast<decltype(r.hostUnregister)>(symbol("cudaHostUnregister"));
  found = r;
  return found;
}

// Page-locked host memory, kept and grown between calls: a copy from it is one DMA,
// where a copy from pageable memory is staged by the driver in small pieces (a 256 MiB
// pageable input came up at 5-8 GB/s on the H100 and H200 hosts measured). Null when the
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

// Copies `count` rows of `rowBytes` from host `source` (row from[i]; row i where `from`
// is null) to device `target` (row at[i]), one copy per run of rows consecutive on both
// sides. From page-locked `source` (pinHost) the copies read it directly; otherwise the
// rows are gathered into the staging buffer first, or copied from pageable memory where
// there is none. Returns "" or what failed.
inline std::string CopyRows(void* target, const void* source, size_t rowBytes, const int32_t* from, const int32_t* at, size_t count, bool sourcePinned) {
  const Runtime& r = runtime();
  if (r.memcpy == nullptr) return "cudaMemcpy was not found in the loaded CUDA runtime";
  const bool async = r.memcpyAsync != nullptr && r.streamSynchronize != nullptr;
  void* pinned = async && !sourcePinned ? staging(rowBytes * count) : nullptr;
  const char* base = static_cast<const char*>(source);
  if (pinned != nullptr) {
    for (size_t i = 0; i < count; i++) std::memcpy(static_cast<char*>(pinned) + i * rowBytes, base + static_cast<size_t>(from != nullptr ? from[i] : i) * rowBytes, rowBytes);
    base = static_cast<const char*>(pinned);
    from = nullptr;  // staged rows lie in order
  }
  auto row = [&](size_t i) { return from != nullptr ? static_cast<size_t>(from[i]) : i; };
  const bool overlapped = async && (sourcePinned || pinned != nullptr);
  for (size_t i = 0; i < count;) {
    size_t run = 1;
    while (i + run < count && at[i + run] == at[i] + static_cast<int32_t>(run) && row(i + run) == row(i) + run) run++;
    char* to = static_cast<char*>(target) + static_cast<size_t>(at[i]) * rowBytes;
    const char* rows = base + row(i) * rowBytes;
    // The legacy default stream (0): synchronized below, before the staging buffer is reused.
    int code = overlapped ? r.memcpyAsync(to, rows, run * rowBytes, kHostToDevice, nullptr) : r.memcpy(to, rows, run * rowBytes, kHostToDevice);
    if (code != 0) {
      if (overlapped) r.streamSynchronize(nullptr);
      return "cudaMemcpy to the device failed with CUDA error " + std::to_string(code);
    }
    i += run;
  }
  if (overlapped) {
    int code = r.streamSynchronize(nullptr);
    if (code != 0) return "cudaStreamSynchronize failed with CUDA error " + std::to_string(code);
  }
  return "";
}

// Page-locks host memory the caller keeps (cudaHostRegister), so copies from it are
// direct DMA; "" or why not (no CUDA runtime loaded, the driver refused).
inline std::string Register(void* data, size_t bytes) {
  const Runtime& r = runtime();
  if (r.hostRegister == nullptr || r.hostUnregister == nullptr) return "no CUDA runtime is loaded";
  int code = r.hostRegister(data, bytes, 0);
  return code == 0 ? "" : "cudaHostRegister failed with CUDA error " + std::to_string(code);
}

inline void Unregister(void* data) {
  const Runtime& r = runtime();
  if (r.hostUnregister != nullptr) r.hostUnregister(data);
}

}  // namespace cuda
