/* examples/c_load.c — the C API end to end: write a small sharded checkpoint into DIR
 * (recording each tensor's XXH3), open it, list it, load it into loader-owned memory
 * checking those hashes, hand one tensor out as DLPack.
 *
 *   bazel build //examples:c_load && mkdir -p /tmp/ckpt && bazel-bin/examples/c_load /tmp/ckpt
 * (DIR must exist: sl_save_sharded does not create folders)
 */
#include <stdio.h>
#include <string.h>

#include "capi/shardload.h"

static int Fail(const char* what) {
  fprintf(stderr, "%s failed: %s: %s\n", what, sl_status_name(sl_last_error_code()),
          sl_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  /* Three F32 tensors of 64 elements; shards of at most 300 bytes → three files. */
  static float w[3][64];
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < 64; ++i) w[t][i] = (float)(t * 100 + i);
  const uint64_t shape[2] = {8, 8};
  sl_tensor_view views[3] = {
      {"layers.0.weight", 15, "F32", shape, 2, w[0]},
      {"layers.1.weight", 15, "F32", shape, 2, w[1]},
      {"layers.2.weight", 15, "F32", shape, 2, w[2]},
  };
  if (sl_save_sharded_ex(argv[1], views, 3, "300B", NULL, NULL, NULL, 0, SL_SAVE_CHECKSUMS) !=
      SL_OK)
    return Fail("sl_save_sharded_ex");

  sl_checkpoint* ckpt = NULL;
  if (sl_checkpoint_open(argv[1], &ckpt) != SL_OK) return Fail("sl_checkpoint_open");
  size_t n = sl_checkpoint_tensor_count(ckpt);
  printf("%zu tensors in %zu shards\n", n, sl_checkpoint_shard_count(ckpt));
  for (size_t i = 0; i < n; ++i) {
    sl_tensor_info info;
    if (sl_checkpoint_tensor(ckpt, i, &info) != SL_OK) return Fail("sl_checkpoint_tensor");
    printf("  %.*s %s [%llu, %llu] in %s\n", (int)info.name_len, info.name, info.dtype,
           (unsigned long long)info.shape[0], (unsigned long long)info.shape[1], info.file);
  }

  sl_options* options = NULL;
  if (sl_options_new(&options) != SL_OK) return Fail("sl_options_new");
  /* Check every tensor against the hash recorded when it was saved (data_loss if not). */
  if (sl_options_set_verify(options, 1) != SL_OK) return Fail("sl_options_set_verify");
  size_t hashes = 0;
  for (size_t i = 0; i < sl_checkpoint_metadata_count(ckpt); ++i) {
    const char *key = NULL, *value = NULL;
    if (sl_checkpoint_metadata(ckpt, i, &key, &value) != SL_OK) return Fail("metadata");
    if (strncmp(key, "shardload.xxh3.", 15) == 0) ++hashes;
  }
  printf("%zu recorded hashes, verify on\n", hashes);
  sl_loaded* loaded = NULL;
  sl_report* report = NULL;
  if (sl_load_all(ckpt, options, NULL, 0, &loaded, &report) != SL_OK) return Fail("sl_load_all");
  printf("matched %zu, missing %zu, unexpected %zu\n",
         sl_report_count(report, SL_REPORT_MATCHED), sl_report_count(report, SL_REPORT_MISSING),
         sl_report_count(report, SL_REPORT_UNEXPECTED));
  /* How the load ran, when there is something to say (a GPU load that could not pin
   * its staging memory): a server would log these. */
  for (size_t i = 0; i < sl_report_count(report, SL_REPORT_WARNINGS); ++i) {
    const char* line = NULL;
    size_t len = 0;
    if (sl_report_item(report, SL_REPORT_WARNINGS, i, &line, &len) == SL_OK) {
      fprintf(stderr, "warning: %.*s\n", (int)len, line);
    }
  }
  for (size_t i = 0; i < sl_loaded_count(loaded); ++i) {
    sl_loaded_tensor t;
    if (sl_loaded_get(loaded, i, &t) != SL_OK) return Fail("sl_loaded_get");
    const float* p = (const float*)t.data;
    printf("  %.*s on %s: first %g last %g\n", (int)t.name_len, t.name, t.device, p[0], p[63]);
  }

  DLManagedTensor* dl = NULL;
  if (sl_loaded_export_dlpack(loaded, 1, 0, &dl) != SL_OK) return Fail("sl_loaded_export_dlpack");
  sl_loaded_free(loaded); /* the export keeps the memory alive */
  printf("dlpack: ndim %d shape [%lld, %lld] code %d bits %d device %d; element 9 = %g\n",
         dl->dl_tensor.ndim, (long long)dl->dl_tensor.shape[0], (long long)dl->dl_tensor.shape[1],
         dl->dl_tensor.dtype.code, dl->dl_tensor.dtype.bits, (int)dl->dl_tensor.device.device_type,
         ((const float*)dl->dl_tensor.data)[9]);
  dl->deleter(dl);

  sl_report_free(report);
  sl_options_free(options);
  sl_checkpoint_free(ckpt);
  return 0;
}
