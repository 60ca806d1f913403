// Sessions whose outputs can stay in device memory, for the CUDA provider.
//
// onnxruntime-node copies every input to the device and every output back for a
// CUDA session (it binds device memory only for WebGPU), so a decode step of a
// large model moved its Lightning states and KV over the bus on every run. This
// addon opens the same libonnxruntime that onnxruntime-node loaded and runs
// sessions through an IoBinding: an output can be left where the provider wrote
// it and fed to the next run as it is (host_copies.cc writes host rows into such a
// tensor). engine/runtime/native-session.ts is its only caller. On the CPU provider "device" memory is host memory, which is how
// the tests exercise every path here without a GPU.
//
// Calls run synchronously on the calling thread: a decode step's runs are short
// and a thread hop per run would cost more than it frees.
#include <dlfcn.h>
#include <node_api.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "addon.h"
#include "cuda_runtime.h"

namespace panorama {

const OrtApi* ort = nullptr;

}  // namespace panorama

namespace panorama {

napi_value Throw(napi_env js, const std::string& message) {
  napi_throw_error(js, nullptr, message.c_str());
  return nullptr;
}

// Turns an OrtStatus into a pending JavaScript exception; true when there was one.
bool Failed(napi_env js, OrtStatus* status) {
  if (status == nullptr) return false;
  std::string message = ort->GetErrorMessage(status);
  ort->ReleaseStatus(status);
  napi_throw_error(js, nullptr, message.c_str());
  return true;
}

size_t ElementBytes(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
      return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return 1;
    default:
      return 0;
  }
}

// {type, dims} of a tensor value, with its element count.
bool Describe(napi_env js, OrtValue* value, napi_value target, ONNXTensorElementDataType* type, size_t* count) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (Failed(js, ort->GetTensorTypeAndShape(value, &info))) return false;
  size_t rank = 0;
  std::vector<int64_t> dims;
  bool failed = Failed(js, ort->GetTensorElementType(info, type)) || Failed(js, ort->GetDimensionsCount(info, &rank));
  if (!failed) {
    dims.resize(rank);
    failed = Failed(js, ort->GetDimensions(info, dims.data(), rank)) || Failed(js, ort->GetTensorShapeElementCount(info, count));
  }
  ort->ReleaseTensorTypeAndShapeInfo(info);
  if (failed) return false;
  napi_value jsType, jsDims;
  napi_create_int32(js, *type, &jsType);
  napi_create_array_with_length(js, rank, &jsDims);
  for (size_t i = 0; i < rank; i++) {
    napi_value dim;
    napi_create_int64(js, dims[i], &dim);
    napi_set_element(js, jsDims, i, dim);
  }
  napi_set_named_property(js, target, "type", jsType);
  napi_set_named_property(js, target, "dims", jsDims);
  return true;
}

bool MemoryOf(napi_env js, OrtValue* value, TensorMemory* memory) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (Failed(js, ort->GetTensorTypeAndShape(value, &info))) return false;
  ONNXTensorElementDataType type;
  size_t count = 0;
  bool failed = Failed(js, ort->GetTensorElementType(info, &type)) || Failed(js, ort->GetTensorShapeElementCount(info, &count));
  ort->ReleaseTensorTypeAndShapeInfo(info);
  const OrtMemoryInfo* where = nullptr;
  if (failed || Failed(js, ort->GetTensorMutableData(value, &memory->data)) || Failed(js, ort->GetTensorMemoryInfo(value, &where))) return false;
  OrtMemoryInfoDeviceType deviceType;
  ort->MemoryInfoGetDeviceType(where, &deviceType);
  memory->bytes = count * ElementBytes(type);
  memory->host = deviceType == OrtMemoryInfoDeviceType_CPU;
  return true;
}

}  // namespace panorama

namespace {

using namespace panorama;

OrtEnv* env = nullptr;

struct Session {
  OrtSession* session = nullptr;
  OrtMemoryInfo* host = nullptr;
  OrtMemoryInfo* device = nullptr;
};

std::string StringArg(napi_env js, napi_value value) {
  size_t length = 0;
  napi_get_value_string_utf8(js, value, nullptr, 0, &length);
  std::string out(length, '\0');
  napi_get_value_string_utf8(js, value, out.data(), length + 1, &length);
  return out;
}

// [key, value][] from JavaScript (session and run config entries).
std::vector<std::pair<std::string, std::string>> StringPairs(napi_env js, napi_value array) {
  uint32_t count = 0;
  napi_get_array_length(js, array, &count);
  std::vector<std::pair<std::string, std::string>> pairs;
  for (uint32_t i = 0; i < count; i++) {
    napi_value pair, key, value;
    napi_get_element(js, array, i, &pair);
    napi_get_element(js, pair, 0, &key);
    napi_get_element(js, pair, 1, &value);
    pairs.emplace_back(StringArg(js, key), StringArg(js, value));
  }
  return pairs;
}

void FinalizeValue(napi_env, void* data, void*) {
  auto* value = static_cast<Value*>(data);
  if (value->value != nullptr) ort->ReleaseValue(value->value);
  delete value;
}

void FinalizeSession(napi_env, void* data, void*) {
  auto* session = static_cast<Session*>(data);
  if (session->session != nullptr) ort->ReleaseSession(session->session);
  if (session->host != nullptr) ort->ReleaseMemoryInfo(session->host);
  if (session->device != nullptr) ort->ReleaseMemoryInfo(session->device);
  delete session;
}

// Copies a tensor's bytes into a new ArrayBuffer (never an external one: Electron's
// V8 memory cage refuses buffers it did not allocate).
bool CopyOut(napi_env js, OrtValue* value, napi_value target) {
  TensorMemory memory;
  if (!MemoryOf(js, value, &memory)) return false;
  const size_t bytes = memory.bytes;
  const void* source = memory.data;
  void* target_data = nullptr;
  napi_value buffer;
  napi_create_arraybuffer(js, bytes, &target_data, &buffer);
  if (bytes > 0) {
    if (memory.host) {
      std::memcpy(target_data, source, bytes);
    } else {
      const auto& cudart = cuda::runtime();
      if (cudart.memcpy == nullptr) {
        Throw(js, "cannot copy a device tensor to host memory: cudaMemcpy was not found in the loaded CUDA runtime");
        return false;
      }
      int code = cudart.memcpy(target_data, source, bytes, cuda::kDeviceToHost);
      if (code != 0) {
        Throw(js, "cudaMemcpy to host failed with CUDA error " + std::to_string(code));
        return false;
      }
    }
  }
  napi_set_named_property(js, target, "data", buffer);
  return true;
}

// init(path of libonnxruntime). Idempotent.
napi_value Init(napi_env js, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(js, info, &argc, argv, nullptr, nullptr);
  if (argc < 1) return Throw(js, "init(libraryPath) needs the path of libonnxruntime");
  if (ort == nullptr) {
    std::string path = StringArg(js, argv[0]);
    void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (library == nullptr) return Throw(js, std::string("cannot open ") + path + ": " + dlerror());
    using GetApiBase = const OrtApiBase* (*)();
    auto getBase = reinterpret_cast<GetApiBase>(dlsym(library, "OrtGetApiBase"));
    if (getBase == nullptr) return Throw(js, path + " has no OrtGetApiBase");
    const OrtApi* api = getBase()->GetApi(ORT_API_VERSION);
    if (api == nullptr) {
      return Throw(js, std::string("onnxruntime ") + getBase()->GetVersionString() + " is older than the API this addon was built for (" +
                           std::to_string(ORT_API_VERSION) + ")");
    }
    ort = api;
    // onnxruntime keeps one environment per process: this returns onnxruntime-node's when it exists.
    if (Failed(js, ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "panorama", &env))) {
      ort = nullptr;
      return nullptr;
    }
  }
  return nullptr;
}

// createSession(model bytes, {cuda, deviceId, threads, logLevel, config: [key, value][]})
//   → {handle, inputNames, outputNames}
napi_value CreateSession(napi_env js, napi_callback_info info) {
  if (ort == nullptr) return Throw(js, "init() first");
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(js, info, &argc, argv, nullptr, nullptr);
  void* bytes = nullptr;
  size_t length = 0;
  napi_typedarray_type arrayType;
  napi_value arrayBuffer;
  size_t offset = 0;
  bool isTyped = false;
  napi_is_typedarray(js, argv[0], &isTyped);
  if (!isTyped) return Throw(js, "createSession: the model must be a Uint8Array");
  napi_get_typedarray_info(js, argv[0], &arrayType, &length, &bytes, &arrayBuffer, &offset);

  auto get = [&](const char* key) {
    napi_value value;
    napi_get_named_property(js, argv[1], key, &value);
    return value;
  };
  bool cuda = false, cudaGraph = false;
  int32_t deviceId = 0, threads = 0, logLevel = 3;
  napi_get_value_bool(js, get("cuda"), &cuda);
  napi_get_value_bool(js, get("cudaGraph"), &cudaGraph);
  napi_get_value_int32(js, get("deviceId"), &deviceId);
  napi_get_value_int32(js, get("threads"), &threads);
  napi_get_value_int32(js, get("logLevel"), &logLevel);

  OrtSessionOptions* options = nullptr;
  if (Failed(js, ort->CreateSessionOptions(&options))) return nullptr;
  auto fail = [&](OrtStatus* status) {
    if (status == nullptr) return false;
    ort->ReleaseSessionOptions(options);
    return Failed(js, status);
  };
  if (fail(ort->SetIntraOpNumThreads(options, threads))) return nullptr;
  if (fail(ort->SetSessionGraphOptimizationLevel(options, ORT_ENABLE_ALL))) return nullptr;
  if (fail(ort->SetSessionLogSeverityLevel(options, logLevel))) return nullptr;
  for (const auto& [key, value] : StringPairs(js, get("config"))) {
    if (fail(ort->AddSessionConfigEntry(options, key.c_str(), value.c_str()))) return nullptr;
  }
  if (cuda) {
    OrtCUDAProviderOptionsV2* cudaOptions = nullptr;
    if (fail(ort->CreateCUDAProviderOptions(&cudaOptions))) return nullptr;
    std::string id = std::to_string(deviceId);
    // enable_cuda_graph: runs with a gpu_graph_id are captured once and then replayed, the
    // whole graph in one launch (their inputs and outputs must keep their addresses).
    const char* keys[] = {"device_id", "enable_cuda_graph"};
    const char* values[] = {id.c_str(), cudaGraph ? "1" : "0"};
    OrtStatus* status = ort->UpdateCUDAProviderOptions(cudaOptions, keys, values, 2);
    if (status == nullptr) status = ort->SessionOptionsAppendExecutionProvider_CUDA_V2(options, cudaOptions);
    ort->ReleaseCUDAProviderOptions(cudaOptions);
    if (fail(status)) return nullptr;
  }

  auto* session = new Session();
  OrtStatus* status = ort->CreateSessionFromArray(env, bytes, length, options, &session->session);
  ort->ReleaseSessionOptions(options);
  if (status == nullptr) status = ort->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &session->host);
  if (status == nullptr) {
    status = cuda ? ort->CreateMemoryInfo("Cuda", OrtDeviceAllocator, deviceId, OrtMemTypeDefault, &session->device)
                  : ort->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &session->device);
  }
  if (status != nullptr) {
    FinalizeSession(js, session, nullptr);
    Failed(js, status);
    return nullptr;
  }

  OrtAllocator* allocator = nullptr;
  if (Failed(js, ort->GetAllocatorWithDefaultOptions(&allocator))) return nullptr;
  napi_value result, handle;
  napi_create_object(js, &result);
  napi_create_external(js, session, FinalizeSession, nullptr, &handle);
  napi_set_named_property(js, result, "handle", handle);
  for (int side = 0; side < 2; side++) {
    size_t count = 0;
    if (Failed(js, side == 0 ? ort->SessionGetInputCount(session->session, &count) : ort->SessionGetOutputCount(session->session, &count))) return nullptr;
    napi_value names;
    napi_create_array_with_length(js, count, &names);
    for (size_t i = 0; i < count; i++) {
      char* name = nullptr;
      if (Failed(js, side == 0 ? ort->SessionGetInputName(session->session, i, allocator, &name)
                               : ort->SessionGetOutputName(session->session, i, allocator, &name))) {
        return nullptr;
      }
      napi_value jsName;
      napi_create_string_utf8(js, name, NAPI_AUTO_LENGTH, &jsName);
      napi_set_element(js, names, i, jsName);
      allocator->Free(allocator, name);
    }
    napi_set_named_property(js, result, side == 0 ? "inputNames" : "outputNames", names);
  }
  return result;
}

// run(session, inputNames, inputs, outputNames, onDevice, into, runConfig: [key, value][])
//   → [{type, dims, data} | {type, dims, value} | {type, dims, written: true}]
// An input is a value handle, or {type, dims, data: TypedArray} in host memory. into[i],
// when a value handle, is where output i is written (it may be one of the inputs: an
// operator that may run in place, like ScatterND, then skips copying it).
napi_value Run(napi_env js, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(js, info, &argc, argv, nullptr, nullptr);
  if (argc < 7) return Throw(js, "run(session, inputNames, inputs, outputNames, onDevice, into, runConfig)");
  Session* session = Unwrap<Session>(js, argv[0], "session");
  if (session == nullptr) return nullptr;
  if (session->session == nullptr) return Throw(js, "the session was released");

  OrtIoBinding* binding = nullptr;
  if (Failed(js, ort->CreateIoBinding(session->session, &binding))) return nullptr;
  std::vector<OrtValue*> hostInputs;
  auto cleanup = [&]() {
    for (OrtValue* value : hostInputs) ort->ReleaseValue(value);
    ort->ReleaseIoBinding(binding);
  };

  uint32_t inputCount = 0, outputCount = 0;
  napi_get_array_length(js, argv[1], &inputCount);
  for (uint32_t i = 0; i < inputCount; i++) {
    napi_value jsName, input;
    napi_get_element(js, argv[1], i, &jsName);
    napi_get_element(js, argv[2], i, &input);
    std::string name = StringArg(js, jsName);
    napi_valuetype kind;
    napi_typeof(js, input, &kind);
    OrtValue* value = nullptr;
    if (kind == napi_external) {
      Value* held = Unwrap<Value>(js, input, "tensor");
      if (held == nullptr || held->value == nullptr) {
        cleanup();
        return held == nullptr ? nullptr : Throw(js, "input " + name + " was released");
      }
      value = held->value;
    } else {
      napi_value jsType, jsDims, jsData;
      napi_get_named_property(js, input, "type", &jsType);
      napi_get_named_property(js, input, "dims", &jsDims);
      napi_get_named_property(js, input, "data", &jsData);
      int32_t type = 0;
      napi_get_value_int32(js, jsType, &type);
      uint32_t rank = 0;
      napi_get_array_length(js, jsDims, &rank);
      std::vector<int64_t> dims(rank);
      size_t elements = 1;
      for (uint32_t d = 0; d < rank; d++) {
        napi_value dim;
        napi_get_element(js, jsDims, d, &dim);
        napi_get_value_int64(js, dim, &dims[d]);
        elements *= static_cast<size_t>(dims[d]);
      }
      napi_typedarray_type arrayType;
      size_t length = 0, offset = 0;
      void* data = nullptr;
      napi_value arrayBuffer;
      bool isTyped = false;
      napi_is_typedarray(js, jsData, &isTyped);
      size_t per = ElementBytes(static_cast<ONNXTensorElementDataType>(type));
      if (!isTyped || per == 0) {
        cleanup();
        return Throw(js, "input " + name + ": expected a typed array of a supported element type");
      }
      napi_get_typedarray_info(js, jsData, &arrayType, &length, &data, &arrayBuffer, &offset);
      size_t bytes = elements * per;
      // The host buffer is read during this call only (bound, then run, before returning).
      if (Failed(js, ort->CreateTensorWithDataAsOrtValue(session->host, elements == 0 ? nullptr : data, bytes, dims.data(), rank,
                                                         static_cast<ONNXTensorElementDataType>(type), &value))) {
        cleanup();
        return nullptr;
      }
      hostInputs.push_back(value);
    }
    if (Failed(js, ort->BindInput(binding, name.c_str(), value))) {
      cleanup();
      return nullptr;
    }
  }

  napi_get_array_length(js, argv[3], &outputCount);
  std::vector<bool> onDevice(outputCount), written(outputCount);
  for (uint32_t i = 0; i < outputCount; i++) {
    napi_value jsName, flag, target;
    napi_get_element(js, argv[3], i, &jsName);
    napi_get_element(js, argv[4], i, &flag);
    napi_get_element(js, argv[5], i, &target);
    std::string name = StringArg(js, jsName);
    bool device = false;
    napi_get_value_bool(js, flag, &device);
    onDevice[i] = device;
    napi_valuetype kind;
    napi_typeof(js, target, &kind);
    OrtStatus* status = nullptr;
    if (kind == napi_external) {
      Value* held = Unwrap<Value>(js, target, "tensor");
      if (held == nullptr || held->value == nullptr) {
        cleanup();
        return held == nullptr ? nullptr : Throw(js, "output " + name + ": the tensor to write into was released");
      }
      written[i] = true;
      status = ort->BindOutput(binding, name.c_str(), held->value);
    } else {
      status = ort->BindOutputToDevice(binding, name.c_str(), device ? session->device : session->host);
    }
    if (Failed(js, status)) {
      cleanup();
      return nullptr;
    }
  }

  OrtRunOptions* runOptions = nullptr;
  const auto runConfig = StringPairs(js, argv[6]);
  if (!runConfig.empty() && Failed(js, ort->CreateRunOptions(&runOptions))) {
    cleanup();
    return nullptr;
  }
  for (const auto& [key, value] : runConfig) {
    if (Failed(js, ort->AddRunConfigEntry(runOptions, key.c_str(), value.c_str()))) {
      ort->ReleaseRunOptions(runOptions);
      cleanup();
      return nullptr;
    }
  }
  OrtStatus* ran = ort->RunWithBinding(session->session, runOptions, binding);
  if (runOptions != nullptr) ort->ReleaseRunOptions(runOptions);
  if (Failed(js, ran)) {
    cleanup();
    return nullptr;
  }
  OrtAllocator* allocator = nullptr;
  OrtValue** values = nullptr;
  size_t count = 0;
  if (Failed(js, ort->GetAllocatorWithDefaultOptions(&allocator)) || Failed(js, ort->GetBoundOutputValues(binding, allocator, &values, &count))) {
    cleanup();
    return nullptr;
  }
  cleanup();
  napi_value results;
  napi_create_array_with_length(js, count, &results);
  bool ok = true;
  for (size_t i = 0; i < count; i++) {
    napi_value result;
    napi_create_object(js, &result);
    ONNXTensorElementDataType type;
    size_t elements = 0;
    ok = ok && Describe(js, values[i], result, &type, &elements);
    if (ok && i < written.size() && written[i]) {
      napi_value yes;
      napi_get_boolean(js, true, &yes);
      napi_set_named_property(js, result, "written", yes);
    } else if (ok && i < onDevice.size() && onDevice[i]) {
      napi_value handle;
      napi_create_external(js, new Value{values[i]}, FinalizeValue, nullptr, &handle);
      napi_set_named_property(js, result, "value", handle);
      values[i] = nullptr;
    } else if (ok) {
      ok = CopyOut(js, values[i], result);
    }
    if (values[i] != nullptr) ort->ReleaseValue(values[i]);
    napi_set_element(js, results, i, result);
  }
  allocator->Free(allocator, values);
  return ok ? results : nullptr;
}

// download(value) → {type, dims, data}: a host copy of a tensor in provider memory.
napi_value Download(napi_env js, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(js, info, &argc, argv, nullptr, nullptr);
  Value* held = Unwrap<Value>(js, argv[0], "tensor");
  if (held == nullptr) return nullptr;
  if (held->value == nullptr) return Throw(js, "the tensor was released");
  napi_value result;
  napi_create_object(js, &result);
  ONNXTensorElementDataType type;
  size_t elements = 0;
  if (!Describe(js, held->value, result, &type, &elements)) return nullptr;
  if (!CopyOut(js, held->value, result)) return nullptr;
  return result;
}

// release(value or session handle): frees its memory now rather than at garbage collection.
napi_value Release(napi_env js, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(js, info, &argc, argv, nullptr, nullptr);
  bool isSession = false;
  if (argc > 1) napi_get_value_bool(js, argv[1], &isSession);
  if (isSession) {
    Session* session = Unwrap<Session>(js, argv[0], "session");
    if (session != nullptr && session->session != nullptr) {
      ort->ReleaseSession(session->session);
      session->session = nullptr;
    }
  } else {
    Value* held = Unwrap<Value>(js, argv[0], "tensor");
    if (held != nullptr && held->value != nullptr) {
      ort->ReleaseValue(held->value);
      held->value = nullptr;
    }
  }
  return nullptr;
}

napi_value Register(napi_env js, napi_value exports) {
  const napi_property_descriptor methods[] = {
      {"init", nullptr, Init, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"createSession", nullptr, CreateSession, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"run", nullptr, Run, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"download", nullptr, Download, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"copyRows", nullptr, CopyRows, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"pinHost", nullptr, PinHost, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"unpinHost", nullptr, UnpinHost, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"release", nullptr, Release, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(js, exports, sizeof(methods) / sizeof(methods[0]), methods);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Register)
