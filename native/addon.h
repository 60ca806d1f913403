// What the addon's two sources share (panorama_ort.cc: sessions and runs;
// host_copies.cc: host memory copied into tensors): the onnxruntime API it opened,
// the handle of a tensor in provider memory, and the helpers that turn failures
// into JavaScript exceptions.
#pragma once

#include <node_api.h>

#include <string>

#include "onnxruntime_c_api.h"

namespace panorama {

// The API of the libonnxruntime init() opened (null before).
extern const OrtApi* ort;

// One tensor in provider memory; released by release() or when JavaScript drops it.
struct Value {
  OrtValue* value = nullptr;
};

// Throws a JavaScript error; returns null for the caller to return.
napi_value Throw(napi_env js, const std::string& message);

// Turns an OrtStatus into a pending JavaScript exception; true when there was one.
bool Failed(napi_env js, OrtStatus* status);

// Bytes of one element of a type the engine uses (0 for others).
size_t ElementBytes(ONNXTensorElementDataType type);

// Where a tensor's bytes are: their address, their size, and whether that is host memory
// (the CPU provider's "device") or the GPU's. False with an exception pending on failure.
struct TensorMemory {
  void* data = nullptr;
  size_t bytes = 0;
  bool host = false;
};
bool MemoryOf(napi_env js, OrtValue* value, TensorMemory* memory);

// {type, dims} of a tensor value set on `target`, with its element count.
bool Describe(napi_env js, OrtValue* value, napi_value target, ONNXTensorElementDataType* type, size_t* count);

// The C++ object behind an external handle; null (an exception pending) if it is not one.
template <typename T>
T* Unwrap(napi_env js, napi_value handle, const char* what) {
  void* data = nullptr;
  napi_valuetype kind;
  napi_typeof(js, handle, &kind);
  if (kind != napi_external || napi_get_value_external(js, handle, &data) != napi_ok || data == nullptr) {
    Throw(js, std::string("expected a ") + what + " handle");
    return nullptr;
  }
  return static_cast<T*>(data);
}


// host_copies.cc: copyRows, pinHost, unpinHost.
napi_value CopyRows(napi_env js, napi_callback_info info);
napi_value PinHost(napi_env js, napi_callback_info info);
napi_value UnpinHost(napi_env js, napi_callback_info info);

}  // namespace panorama
