/* capi/dlpack.h — the DLPack exchange structs that shardload's C API hands out.
 *
 * Provides DLDevice, DLDataType, DLTensor and DLManagedTensor with the memory layout of
 * DLPack (https://github.com/dmlc/dlpack, Apache-2.0, by the DLPack contributors),
 * ABI versions 0.6 to 0.8: the layout torch.utils.dlpack.from_dlpack, NumPy, CuPy and JAX
 * accept inside a PyCapsule named "dltensor". Only the definitions shardload needs are
 * restated here, in our own words; the include guard is upstream's, so whichever of
 * this file and <dlpack/dlpack.h> is included first wins and the other is skipped (the
 * two agree on every struct and constant below).
 *
 *   DLManagedTensor* t = ...;            // from sl_loaded_export_dlpack
 *   float* p = (float*)((char*)t->dl_tensor.data + t->dl_tensor.byte_offset);
 *   t->deleter(t);                       // exactly once, when done
 */
#ifndef DLPACK_DLPACK_H_
#define DLPACK_DLPACK_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* DLPACK_VERSION: the ABI level these definitions follow (0.8: kDLBool exists). */
#define DLPACK_VERSION 80

/* DLDeviceType: where the data lives. Only the values shardload uses are named. */
typedef enum {
  kDLCPU = 1,  /* host memory */
  kDLCUDA = 2, /* CUDA device memory */
} DLDeviceType;

/* DLDevice: a device type and its ordinal (0 for the host). */
typedef struct {
  DLDeviceType device_type;
  int32_t device_id;
} DLDevice;

/* DLDataTypeCode: the element kind; with `bits` it names the type. */
typedef enum {
  kDLInt = 0U,
  kDLUInt = 1U,
  kDLFloat = 2U,
  kDLOpaqueHandle = 3U,
  kDLBfloat = 4U,
  kDLComplex = 5U,
  kDLBool = 6U,
} DLDataTypeCode;

/* DLDataType: code, bits per lane, lanes (always 1 from shardload). */
typedef struct {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
} DLDataType;

/* DLTensor: a strided view; shardload always gives compact row-major tensors with
 * strides == NULL and byte_offset == 0. */
typedef struct {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
} DLTensor;

/* DLManagedTensor: a DLTensor plus its owner. The consumer calls deleter(self) exactly
 * once when it no longer needs the data. */
typedef struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensor* self);
} DLManagedTensor;

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* DLPACK_DLPACK_H_ */
