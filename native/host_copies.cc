// Host memory copied into tensors in provider memory (the offloaded KV's missed
// blocks into the device pool, engine/model/resident-kv.ts), without a session run:
// row by row on the CPU provider, through the CUDA runtime otherwise
// (cuda_runtime.h), from host memory page-locked here where it can be.
#include <node_api.h>

#include <cstring>
#include <string>
#include <vector>

#include "addon.h"
#include "cuda_runtime.h"

namespace panorama {

namespace {

// Host memory page-locked by pinHost, each range held alive by a reference until unpinHost.
struct PinnedRange {
  char* data;
  size_t bytes;
  napi_ref keep;
};
std::vector<PinnedRange> pinnedRanges;

bool IsPinned(const void* data, size_t bytes) {
  const char* begin = static_cast<const char*>(data);
  for (const auto& range : pinnedRanges) {
    if (begin >= range.data && begin + bytes <= range.data + range.bytes) return true;
  }
  return false;
}

// A typed array's data and byte length; false (with an exception pending) if it is not one.
bool TypedBytes(napi_env js, napi_value value, const char* what, void** data, size_t* bytes, napi_typedarray_type* type = nullptr) {
  bool isTyped = false;
  napi_is_typedarray(js, value, &isTyped);
  if (!isTyped) {
    Throw(js, std::string(what) + " must be a typed array");
    return false;
  }
  napi_typedarray_type arrayType;
  size_t length = 0, offset = 0;
  napi_value arrayBuffer, byteLength;
  napi_get_typedarray_info(js, value, &arrayType, &length, data, &arrayBuffer, &offset);
  napi_get_named_property(js, value, "byteLength", &byteLength);
  int64_t count = 0;
  napi_get_value_int64(js, byteLength, &count);
  *bytes = static_cast<size_t>(count);
  if (type != nullptr) *type = arrayType;
  return true;
}

// The one typed-array argument of pinHost / unpinHost: the array, its data and byte length.
bool ArrayArgument(napi_env js, napi_callback_info info, const char* what, napi_value* array, void** data, size_t* bytes) {
  size_t argc = 1;
  napi_get_cb_info(js, info, &argc, array, nullptr, nullptr);
  if (argc < 1) {
    Throw(js, std::string(what) + " needs a typed array");
    return false;
  }
  return TypedBytes(js, *array, what, data, bytes);
}

}  // namespace

// copyRows(value, source: TypedArray, rowBytes, from: Int32Array | null, at: Int32Array):
// writes row from[i] of `source` (row i where from is null) over row at[i] of a tensor in
// provider memory, in place (its address is kept, so a captured CUDA graph still sees it).
// Every row is checked before any is written: on a bad index nothing changes.
napi_value CopyRows(napi_env js, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(js, info, &argc, argv, nullptr, nullptr);
  if (argc < 5) return Throw(js, "copyRows(tensor, source, rowBytes, from, at)");
  Value* held = Unwrap<Value>(js, argv[0], "tensor");
  if (held == nullptr) return nullptr;
  if (held->value == nullptr) return Throw(js, "the tensor was released");
  void *source = nullptr, *at = nullptr, *from = nullptr;
  size_t sourceBytes = 0, atBytes = 0, fromBytes = 0;
  napi_typedarray_type atType, fromType = napi_int32_array;
  if (!TypedBytes(js, argv[1], "copyRows: source", &source, &sourceBytes)) return nullptr;
  if (!TypedBytes(js, argv[4], "copyRows: at", &at, &atBytes, &atType)) return nullptr;
  napi_valuetype fromKind;
  napi_typeof(js, argv[3], &fromKind);
  if (fromKind != napi_null && !TypedBytes(js, argv[3], "copyRows: from", &from, &fromBytes, &fromType)) return nullptr;
  if (atType != napi_int32_array || fromType != napi_int32_array) return Throw(js, "copyRows: from and at must be Int32Arrays");
  const size_t count = atBytes / 4;
  if (from != nullptr && fromBytes != atBytes) return Throw(js, "copyRows: from and at differ in length");
  int64_t rowBytes = 0;
  napi_get_value_int64(js, argv[2], &rowBytes);

  TensorMemory target;
  if (!MemoryOf(js, held->value, &target)) return nullptr;
  const size_t row = static_cast<size_t>(rowBytes);
  if (rowBytes <= 0 || target.bytes % row != 0 || sourceBytes % row != 0) {
    return Throw(js, "copyRows: a row of " + std::to_string(rowBytes) + " bytes does not divide the tensor's " + std::to_string(target.bytes) +
                         " bytes and the source's " + std::to_string(sourceBytes));
  }
  if (from == nullptr && sourceBytes != count * row) {
    return Throw(js, "copyRows: " + std::to_string(sourceBytes) + " bytes of rows for " + std::to_string(count) + " destinations of " + std::to_string(rowBytes) + " bytes");
  }
  const auto* destinations = static_cast<const int32_t*>(at);
  const auto* sources = static_cast<const int32_t*>(from);  // null: row i
  const int64_t tensorRows = static_cast<int64_t>(target.bytes / row);
  const int64_t sourceRows = static_cast<int64_t>(sourceBytes / row);
  for (size_t i = 0; i < count; i++) {
    if (destinations[i] < 0 || destinations[i] >= tensorRows) {
      return Throw(js, "copyRows: row " + std::to_string(destinations[i]) + " is outside the tensor's " + std::to_string(tensorRows));
    }
    if (sources != nullptr && (sources[i] < 0 || sources[i] >= sourceRows)) {
      return Throw(js, "copyRows: source row " + std::to_string(sources[i]) + " is outside the source's " + std::to_string(sourceRows));
    }
  }
  if (target.host) {
    for (size_t i = 0; i < count; i++) {
      const size_t sourceRow = sources != nullptr ? static_cast<size_t>(sources[i]) : i;
      std::memcpy(static_cast<char*>(target.data) + static_cast<size_t>(destinations[i]) * row, static_cast<char*>(source) + sourceRow * row, row);
    }
    return nullptr;
  }
  std::string problem = cuda::CopyRows(target.data, source, row, sources, destinations, count, IsPinned(source, sourceBytes));
  return problem.empty() ? nullptr : Throw(js, "copyRows: " + problem);
}

// pinHost(typedArray) → whether its memory is now page-locked (false without a CUDA
// runtime, or when the driver refused: copies from it are then staged). The array is
// kept alive until unpinHost.
napi_value PinHost(napi_env js, napi_callback_info info) {
  napi_value array;
  void* data = nullptr;
  size_t bytes = 0;
  if (!ArrayArgument(js, info, "pinHost", &array, &data, &bytes)) return nullptr;
  bool pinned = IsPinned(data, bytes);
  if (!pinned && bytes > 0 && cuda::Register(data, bytes).empty()) {
    napi_ref keep;
    napi_create_reference(js, array, 1, &keep);
    pinnedRanges.push_back({static_cast<char*>(data), bytes, keep});
    pinned = true;
  }
  napi_value result;
  napi_get_boolean(js, pinned, &result);
  return result;
}

// unpinHost(typedArray): releases what pinHost page-locked for that array (nothing otherwise).
napi_value UnpinHost(napi_env js, napi_callback_info info) {
  napi_value array;
  void* data = nullptr;
  size_t bytes = 0;
  if (!ArrayArgument(js, info, "unpinHost", &array, &data, &bytes)) return nullptr;
  for (auto range = pinnedRanges.begin(); range != pinnedRanges.end(); ++range) {
    if (range->data == data && range->bytes == bytes) {
      cuda::Unregister(range->data);
      napi_delete_reference(js, range->keep);
      pinnedRanges.erase(range);
      break;
    }
  }
  return nullptr;
}

}  // namespace panorama
