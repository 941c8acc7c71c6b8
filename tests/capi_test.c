/* tests/capi_test.c — the C API from a C99 program linked against libshardload.so.
 *
 * Writes fixtures through sl_save_file / sl_save_sharded, then opens, lists, loads both
 * ways (sl_load_into, sl_load_all), checks strict / non-strict reports, renames, casts,
 * DLPack exports (fields and lifetime), progress and cancel, save flags (empty
 * metadata, checksums), verify against recorded hashes, host memory pools (reuse,
 * limits, trim, lifetime against exports), and the exact code and message of errors. Prints "N passed, N failed" and exits non-zero on any failure. */
#define _DEFAULT_SOURCE /* mincore */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capi/shardload.h"

static int g_failed = 0;
static int g_checks = 0;
static int g_cases_passed = 0;
static int g_cases_failed = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    ++g_checks;                                                              \
    if (!(cond)) {                                                           \
      ++g_failed;                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                        \
  } while (0)

#define CHECK_OK(expr)                                                                 \
  do {                                                                                 \
    sl_status s_ = (expr);                                                             \
    ++g_checks;                                                                        \
    if (s_ != SL_OK) {                                                                 \
      ++g_failed;                                                                      \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #expr,        \
              sl_status_name(s_), sl_last_error());                                    \
    }                                                                                  \
  } while (0)

/* CHECK_ERR: expr fails with `code` and exactly `msg` as sl_last_error(). */
#define CHECK_ERR(expr, code, msg)                                                      \
  do {                                                                                  \
    sl_status s_ = (expr);                                                              \
    ++g_checks;                                                                         \
    if (s_ != (code) || strcmp(sl_last_error(), (msg)) != 0 ||                          \
        sl_last_error_code() != (code)) {                                               \
      ++g_failed;                                                                       \
      fprintf(stderr, "%s:%d: %s\n  got      %s: %s\n  expected %s: %s\n", __FILE__,    \
              __LINE__, #expr, sl_status_name(s_), sl_last_error(), sl_status_name(code), \
              (msg));                                                                   \
    }                                                                                   \
  } while (0)

static char g_dir[4096];

static const char* Path(const char* name) {
  static char buf[8192];
  snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
  return buf;
}

/* Case outcomes, written as JUnit XML to $XML_OUTPUT_FILE (Bazel) at the end. */
static const char* g_case_names[64];
static int g_case_ok[64];
static int g_case_count = 0;

static void RunCase(const char* name, void (*fn)(void)) {
  int before = g_failed;
  fn();
  if (g_case_count < 64) {
    g_case_names[g_case_count] = name;
    g_case_ok[g_case_count++] = g_failed == before;
  }
  if (g_failed == before) {
    ++g_cases_passed;
    printf("[ OK ] %s\n", name);
  } else {
    ++g_cases_failed;
    printf("[FAIL] %s\n", name);
  }
}

/* ---------------------------------------------------------------- fixtures */

static float g_a[6] = {1.5f, -2.0f, 3.25f, 4.0f, 5.5f, -6.75f};  /* a: F32[2, 3] */
static int64_t g_b[4] = {10, -20, 30, 1LL << 40};               /* b: I64[4] */
static uint16_t g_c[2] = {0x3F80, 0xC000};                       /* c: BF16[2] = 1, -2 */
static uint8_t g_nul[1] = {7};                                   /* "n\0l": U8[1] */
static uint8_t g_f8[4] = {0x38, 0x40, 0xB8, 0x00};               /* f8: F8_E4M3[2, 2] */

static const uint64_t kShapeA[2] = {2, 3};
static const uint64_t kShapeB[1] = {4};
static const uint64_t kShapeC[1] = {2};
static const uint64_t kShapeNul[1] = {1};
static const uint64_t kShapeF8[2] = {2, 2};

/* WriteSingle: single.safetensors with a, b, c, "n\0l", f8 and metadata format=pt. */
static void WriteSingle(void) {
  sl_tensor_view t[5] = {
      {"a", 1, "F32", kShapeA, 2, g_a},
      {"b", 1, "I64", kShapeB, 1, g_b},
      {"c", 1, "BF16", kShapeC, 1, g_c},
      {"n\0l", 3, "U8", kShapeNul, 1, g_nul},
      {"f8", 2, "F8_E4M3", kShapeF8, 2, g_f8},
  };
  const char* keys[1] = {"format"};
  const char* values[1] = {"pt"};
  CHECK_OK(sl_save_file(Path("single.safetensors"), t, 5, keys, values, 1));
}

/* ---------------------------------------------------------------- cases */

static void TestVersionAndNames(void) {
  CHECK(strcmp(sl_version(), "0.1.12") == 0);
  CHECK(strcmp(sl_status_name(SL_OK), "ok") == 0);
  CHECK(strcmp(sl_status_name(SL_DATA_LOSS), "data_loss") == 0);
  CHECK(strcmp(sl_status_name(SL_INVALID_ARGUMENT), "invalid_argument") == 0);
  CHECK(strcmp(sl_status_name(4), "unknown") == 0);
}

static void TestOpenAndList(void) {
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  if (ck == NULL) return;
  CHECK(sl_checkpoint_tensor_count(ck) == 5);
  CHECK(sl_checkpoint_shard_count(ck) == 1);
  const char* file = NULL;
  CHECK_OK(sl_checkpoint_shard(ck, 0, &file));
  CHECK(file != NULL && strcmp(file, "single.safetensors") == 0);

  /* Sorted by name, byte-wise: a, b, c, f8, "n\0l". */
  const char* expect_names[5] = {"a", "b", "c", "f8", "n\0l"};
  size_t expect_len[5] = {1, 1, 1, 2, 3};
  const char* expect_dtype[5] = {"F32", "I64", "BF16", "F8_E4M3", "U8"};
  uint64_t expect_bytes[5] = {24, 32, 4, 4, 1};
  for (size_t i = 0; i < 5; ++i) {
    sl_tensor_info info;
    CHECK_OK(sl_checkpoint_tensor(ck, i, &info));
    CHECK(info.name_len == expect_len[i]);
    CHECK(memcmp(info.name, expect_names[i], expect_len[i]) == 0);
    CHECK(strcmp(info.dtype, expect_dtype[i]) == 0);
    CHECK(info.bytes == expect_bytes[i]);
    CHECK(strcmp(info.file, "single.safetensors") == 0);
  }
  sl_tensor_info a;
  CHECK_OK(sl_checkpoint_tensor(ck, 0, &a));
  CHECK(a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3);

  size_t index = 99;
  CHECK_OK(sl_checkpoint_find(ck, "n\0l", 3, &index));
  CHECK(index == 4);
  CHECK_ERR(sl_checkpoint_find(ck, "zz", 2, &index), SL_NOT_FOUND,
            "tensor 'zz' is not in the checkpoint");
  CHECK_ERR(sl_checkpoint_tensor(ck, 5, &a), SL_OUT_OF_RANGE,
            "tensor index 5 is out of range (5 tensors)");

  /* The whole listing in one call: the same entries as one call each. */
  sl_tensor_info all[6];
  memset(all, 0xAB, sizeof all);
  CHECK_OK(sl_checkpoint_tensors(ck, 0, 5, all));
  for (size_t i = 0; i < 5; ++i) {
    sl_tensor_info one;
    CHECK_OK(sl_checkpoint_tensor(ck, i, &one));
    CHECK(all[i].name == one.name && all[i].name_len == one.name_len);
    CHECK(all[i].dtype == one.dtype && all[i].shape == one.shape && all[i].ndim == one.ndim);
    CHECK(all[i].file == one.file && all[i].file_offset == one.file_offset);
    CHECK(all[i].bytes == one.bytes);
  }
  unsigned char untouched[sizeof(sl_tensor_info)];
  memset(untouched, 0xAB, sizeof untouched);
  CHECK(memcmp(&all[5], untouched, sizeof untouched) == 0); /* past count: not written */
  /* A window: tensors 3 and 4 ("f8", "n\0l") into out[0..2). */
  sl_tensor_info part2[2];
  CHECK_OK(sl_checkpoint_tensors(ck, 3, 2, part2));
  CHECK(part2[0].name_len == 2 && memcmp(part2[0].name, "f8", 2) == 0);
  CHECK(part2[1].name_len == 3 && memcmp(part2[1].name, "n\0l", 3) == 0);
  CHECK_OK(sl_checkpoint_tensors(ck, 5, 0, NULL)); /* empty, at the end */
  memset(all, 0xAB, sizeof all);
  CHECK_ERR(sl_checkpoint_tensors(ck, 4, 2, all), SL_OUT_OF_RANGE,
            "tensors [4, 4 + 2) are out of range (5 tensors)");
  CHECK(memcmp(&all[0], untouched, sizeof untouched) == 0); /* nothing written */
  CHECK_ERR(sl_checkpoint_tensors(ck, 6, 0, all), SL_OUT_OF_RANGE,
            "tensors [6, 6 + 0) are out of range (5 tensors)");
  CHECK_ERR(sl_checkpoint_tensors(ck, SIZE_MAX, 2, all), SL_OUT_OF_RANGE,
            "tensors [18446744073709551615, 18446744073709551615 + 2) are out of range "
            "(5 tensors)");
  CHECK_ERR(sl_checkpoint_tensors(ck, 1, SIZE_MAX, all), SL_OUT_OF_RANGE,
            "tensors [1, 1 + 18446744073709551615) are out of range (5 tensors)");
  CHECK_ERR(sl_checkpoint_tensors(ck, 0, 1, NULL), SL_INVALID_ARGUMENT, "out is NULL");
  CHECK_ERR(sl_checkpoint_tensors(NULL, 0, 0, all), SL_INVALID_ARGUMENT,
            "checkpoint is NULL");

  CHECK(sl_checkpoint_metadata_count(ck) == 1);
  const char *k = NULL, *v = NULL;
  CHECK_OK(sl_checkpoint_metadata(ck, 0, &k, &v));
  CHECK(k && v && strcmp(k, "format") == 0 && strcmp(v, "pt") == 0);
  CHECK_ERR(sl_checkpoint_metadata(ck, 1, &k, &v), SL_OUT_OF_RANGE,
            "metadata index 1 is out of range (1 entries)");

  /* Partial reads: elements 2..4 of a. */
  float part[3] = {0};
  CHECK_OK(sl_checkpoint_read(ck, 0, 2 * sizeof(float), sizeof part, part));
  CHECK(part[0] == g_a[2] && part[1] == g_a[3] && part[2] == g_a[4]);
  CHECK_ERR(sl_checkpoint_read(ck, 0, 20, 8, part), SL_OUT_OF_RANGE,
            "tensor 'a': bytes [20, 20 + 8) are outside its 24 bytes");
  sl_checkpoint_free(ck);
}

static void TestOpenErrors(void) {
  sl_checkpoint* ck = (sl_checkpoint*)0x1;
  char missing[8192];
  snprintf(missing, sizeof missing, "%s", Path("nope.safetensors"));
  char expect[8300];
  snprintf(expect, sizeof expect, "%s: no such file or directory", missing);
  CHECK_ERR(sl_checkpoint_open(missing, &ck), SL_NOT_FOUND, expect);
  CHECK(ck == NULL);
  CHECK_ERR(sl_checkpoint_open(NULL, &ck), SL_INVALID_ARGUMENT, "path is NULL");

  /* A file whose header length runs past the end. */
  FILE* f = fopen(Path("bad.safetensors"), "wb");
  CHECK(f != NULL);
  if (f != NULL) {
    uint64_t n = 1000;
    fwrite(&n, 8, 1, f);
    fwrite("{}", 1, 2, f);
    fclose(f);
  }
  sl_status s = sl_checkpoint_open(Path("bad.safetensors"), &ck);
  CHECK(s == SL_INVALID_ARGUMENT || s == SL_DATA_LOSS);
  CHECK(strstr(sl_last_error(), "bad.safetensors") != NULL);
  CHECK(ck == NULL);
}

static void TestLoadAllAndDlpack(void) {
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_options_set_threads(opt, 2));
  size_t live_before = sl_live_arena_sets();
  sl_loaded* loaded = NULL;
  sl_report* report = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, &report));
  if (loaded == NULL) return;
  CHECK(sl_live_arena_sets() == live_before + 1);
  CHECK(sl_loaded_count(loaded) == 5);
  CHECK(sl_report_count(report, SL_REPORT_MATCHED) == 5);
  CHECK(sl_report_count(report, SL_REPORT_MISSING) == 0);
  const char* msg = NULL;
  CHECK(sl_report_status(report, &msg) == SL_OK && strcmp(msg, "") == 0);
  sl_report_free(report);

  size_t ia = 99;
  CHECK_OK(sl_loaded_find(loaded, "a", 1, &ia));
  sl_loaded_tensor t;
  CHECK_OK(sl_loaded_get(loaded, ia, &t));
  CHECK(strcmp(t.dtype, "F32") == 0 && strcmp(t.device, "cpu") == 0 && t.bytes == 24);
  CHECK(((uintptr_t)t.data % 256) == 0);
  CHECK(memcmp(t.data, g_a, sizeof g_a) == 0);
  CHECK_ERR(sl_loaded_find(loaded, "q", 1, &ia), SL_NOT_FOUND, "tensor 'q' was not loaded");

  size_t ib = 99, ic = 99, i8 = 99;
  CHECK_OK(sl_loaded_find(loaded, "b", 1, &ib));
  CHECK_OK(sl_loaded_find(loaded, "c", 1, &ic));
  CHECK_OK(sl_loaded_find(loaded, "f8", 2, &i8));

  DLManagedTensor* da = NULL;
  DLManagedTensor* db = NULL;
  DLManagedTensor* dc = NULL;
  CHECK_OK(sl_loaded_export_dlpack(loaded, ia, 0, &da));
  CHECK_OK(sl_loaded_export_dlpack(loaded, ib, 0, &db));
  CHECK_OK(sl_loaded_export_dlpack(loaded, ic, 0, &dc));
  if (da == NULL || db == NULL || dc == NULL) return;
  CHECK(da->dl_tensor.device.device_type == kDLCPU && da->dl_tensor.device.device_id == 0);
  CHECK(da->dl_tensor.ndim == 2 && da->dl_tensor.shape[0] == 2 && da->dl_tensor.shape[1] == 3);
  CHECK(da->dl_tensor.strides == NULL && da->dl_tensor.byte_offset == 0);
  CHECK(da->dl_tensor.dtype.code == kDLFloat && da->dl_tensor.dtype.bits == 32 &&
        da->dl_tensor.dtype.lanes == 1);
  CHECK(da->dl_tensor.data == t.data);
  CHECK(db->dl_tensor.dtype.code == kDLInt && db->dl_tensor.dtype.bits == 64);
  CHECK(dc->dl_tensor.dtype.code == kDLBfloat && dc->dl_tensor.dtype.bits == 16);

  /* F8 has no DLPack type; as bytes it is U8[2, 2]. */
  DLManagedTensor* d8 = NULL;
  CHECK_ERR(sl_loaded_export_dlpack(loaded, i8, 0, &d8), SL_UNIMPLEMENTED,
            "tensor 'f8': dtype F8_E4M3 has no DLPack type; export it with SL_DLPACK_AS_BYTES");
  CHECK(d8 == NULL);
  CHECK_OK(sl_loaded_export_dlpack(loaded, i8, SL_DLPACK_AS_BYTES, &d8));
  if (d8 != NULL) {
    CHECK(d8->dl_tensor.dtype.code == kDLUInt && d8->dl_tensor.dtype.bits == 8);
    CHECK(d8->dl_tensor.ndim == 2 && d8->dl_tensor.shape[1] == 2);
    CHECK(memcmp(d8->dl_tensor.data, g_f8, 4) == 0);
    d8->deleter(d8);
  }
  /* As bytes, a is U8[2, 12]. */
  DLManagedTensor* dab = NULL;
  CHECK_OK(sl_loaded_export_dlpack(loaded, ia, SL_DLPACK_AS_BYTES, &dab));
  if (dab != NULL) {
    CHECK(dab->dl_tensor.ndim == 2 && dab->dl_tensor.shape[0] == 2 &&
          dab->dl_tensor.shape[1] == 12);
    dab->deleter(dab);
  }
  CHECK_ERR(sl_loaded_export_dlpack(loaded, 9, 0, &d8), SL_OUT_OF_RANGE,
            "tensor index 9 is out of range (5 tensors)");
  CHECK_ERR(sl_loaded_export_dlpack(loaded, 0, 4, &d8), SL_INVALID_ARGUMENT,
            "unknown DLPack export flags 4");

  /* The exports keep the arena alive after the handle and the checkpoint are gone. */
  sl_loaded_free(loaded);
  sl_checkpoint_free(ck);
  CHECK(sl_live_arena_sets() == live_before + 1);
  const float* pa = (const float*)da->dl_tensor.data;
  CHECK(pa[5] == g_a[5]);
  const int64_t* pb = (const int64_t*)db->dl_tensor.data;
  CHECK(pb[3] == (1LL << 40));
  da->deleter(da);
  db->deleter(db);
  CHECK(sl_live_arena_sets() == live_before + 1);
  dc->deleter(dc);
  CHECK(sl_live_arena_sets() == live_before);
  sl_options_free(opt);
}

static void TestLoadIntoStrictFailure(void) {
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  float a[6] = {0};
  float extra[2] = {0};
  uint64_t two = 2;
  sl_target targets[2] = {
      {"a", 1, "F32", kShapeA, 2, NULL, a},
      {"extra", 5, "F32", &two, 1, NULL, extra},
  };
  sl_report* report = NULL;
  CHECK_ERR(sl_load_into(ck, targets, 2, opt, &report), SL_INVALID_ARGUMENT,
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"extra\". "
            "Unexpected key(s) in state_dict: \"b\", \"c\", \"f8\", \"n\\x00l\".");
  CHECK(report != NULL);
  if (report != NULL) {
    const char* msg = NULL;
    CHECK(sl_report_status(report, &msg) == SL_INVALID_ARGUMENT);
    CHECK(msg != NULL && strcmp(msg, sl_last_error()) == 0);
    CHECK(sl_report_count(report, SL_REPORT_MISSING) == 1);
    CHECK(sl_report_count(report, SL_REPORT_UNEXPECTED) == 4);
    const char* name = NULL;
    size_t len = 0;
    CHECK_OK(sl_report_item(report, SL_REPORT_MISSING, 0, &name, &len));
    CHECK(len == 5 && memcmp(name, "extra", 5) == 0);
    CHECK_OK(sl_report_item(report, SL_REPORT_UNEXPECTED, 3, &name, &len));
    CHECK(len == 3 && memcmp(name, "n\0l", 3) == 0);
    CHECK_ERR(sl_report_item(report, SL_REPORT_MISSING, 1, &name, &len), SL_OUT_OF_RANGE,
              "report entry 1 is out of range (1 entries)");
    CHECK_ERR(sl_report_item(report, 9, 0, &name, &len), SL_INVALID_ARGUMENT,
              "unknown report list 9");
    CHECK_ERR(sl_report_item(report, 6, 0, &name, &len), SL_INVALID_ARGUMENT,
              "unknown report list 6");
    /* A failed load reports no warnings about how it ran. */
    CHECK(sl_report_count(report, SL_REPORT_WARNINGS) == 0);
    CHECK_ERR(sl_report_item(report, SL_REPORT_WARNINGS, 0, &name, &len), SL_OUT_OF_RANGE,
              "report entry 0 is out of range (0 entries)");
    CHECK(strstr(sl_report_json(report), "\"missing\":[\"extra\"]") != NULL);
  }
  /* Nothing is written on failure. */
  CHECK(a[0] == 0.0f && a[5] == 0.0f);
  sl_report_free(report);

  /* A size mismatch is an error in non-strict mode too. */
  CHECK_OK(sl_options_set_strict(opt, 0));
  uint64_t wrong[2] = {3, 2};
  sl_target bad = {"a", 1, "F32", wrong, 2, NULL, a};
  CHECK_ERR(sl_load_into(ck, &bad, 1, opt, &report), SL_INVALID_ARGUMENT,
            "Error(s) in loading state_dict: size mismatch for a: copying a param with shape "
            "[2, 3] from checkpoint, the shape in current model is [3, 2].");
  CHECK(sl_report_count(report, SL_REPORT_MISMATCHED) == 1);
  const char *mn = NULL, *mc = NULL, *mt = NULL;
  int is_error = 0;
  CHECK_OK(sl_report_mismatch(report, 0, &mn, &mc, &mt, &is_error));
  CHECK(mn && strcmp(mn, "a") == 0 && strcmp(mc, "F32[2, 3]") == 0 &&
        strcmp(mt, "F32[3, 2]") == 0 && is_error == 1);
  sl_report_free(report);

  /* A target with no data pointer. */
  sl_target nodata = {"a", 1, "F32", kShapeA, 2, NULL, NULL};
  CHECK_ERR(sl_load_into(ck, &nodata, 1, opt, NULL), SL_INVALID_ARGUMENT,
            "target 'a' has no data pointer: LoadInto writes into caller memory (use LoadAll "
            "for loader-owned arenas)");
  sl_target baddtype = {"a", 1, "f32", kShapeA, 2, NULL, a};
  CHECK_ERR(sl_load_into(ck, &baddtype, 1, opt, NULL), SL_INVALID_ARGUMENT,
            "target 'a': unknown dtype 'f32'");
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

static void TestLoadIntoNonStrictAndCast(void) {
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_options_set_strict(opt, 0));
  float a[6] = {0};
  int64_t b[4] = {0};
  float extra[1] = {42.0f};
  uint64_t one = 1;
  sl_target targets[3] = {
      {"a", 1, "F32", kShapeA, 2, "cpu", a},
      {"b", 1, "I64", kShapeB, 1, NULL, b},
      {"extra", 5, "F32", &one, 1, NULL, extra},
  };
  sl_report* report = NULL;
  CHECK_OK(sl_load_into(ck, targets, 3, opt, &report));
  CHECK(memcmp(a, g_a, sizeof a) == 0);
  CHECK(memcmp(b, g_b, sizeof b) == 0);
  CHECK(extra[0] == 42.0f);
  CHECK(sl_report_count(report, SL_REPORT_MATCHED) == 2);
  CHECK(sl_report_count(report, SL_REPORT_MISSING) == 1);
  CHECK(sl_report_count(report, SL_REPORT_UNEXPECTED) == 3);
  sl_report_free(report);

  /* allow_cast: BF16 c into an F32 buffer. */
  float c[2] = {0};
  sl_target cast = {"c", 1, "F32", kShapeC, 1, NULL, c};
  CHECK_ERR(sl_load_into(ck, &cast, 1, opt, NULL), SL_INVALID_ARGUMENT,
            "Error(s) in loading state_dict: dtype mismatch for c: copying a param with dtype "
            "BF16 from checkpoint, the dtype in current model is F32; allow_cast would convert it.");
  CHECK_OK(sl_options_set_allow_cast(opt, 1));
  CHECK_OK(sl_load_into(ck, &cast, 1, opt, &report));
  CHECK(c[0] == 1.0f && c[1] == -2.0f);
  CHECK(sl_report_count(report, SL_REPORT_MISMATCHED) == 1);
  int is_error = 1;
  CHECK_OK(sl_report_mismatch(report, 0, NULL, NULL, NULL, &is_error));
  CHECK(is_error == 0);
  sl_report_free(report);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* Sharded checkpoint with DDP-style "module." names, three shards. */
static void TestShardedRenamesAndAliases(void) {
  mkdir(Path("sharded"), 0755);
  float w0[64], w1[64], w2[64];
  for (int i = 0; i < 64; ++i) {
    w0[i] = (float)i;
    w1[i] = (float)(100 + i);
    w2[i] = (float)(-i);
  }
  uint64_t shape[1] = {64};
  sl_tensor_view t[3] = {
      {"module.l0.weight", 16, "F32", shape, 1, w0},
      {"module.l1.weight", 16, "F32", shape, 1, w1},
      {"module.l2.weight", 16, "F32", shape, 1, w2},
  };
  const char* keys[1] = {"note"};
  const char* values[1] = {"capi"};
  CHECK_ERR(sl_save_sharded(Path("sharded"), t, 3, "12XB", NULL, NULL, NULL, 0),
            SL_INVALID_ARGUMENT,
            "invalid byte size '12XB': unknown unit 'XB' (use B, KB, MB, GB, TB, KiB, MiB, GiB, "
            "TiB)");
  CHECK_OK(sl_save_sharded(Path("sharded"), t, 3, "256B", NULL, keys, values, 1));
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("sharded"), &ck));
  if (ck == NULL) return;
  CHECK(sl_checkpoint_shard_count(ck) == 3);
  const char* file = NULL;
  CHECK_OK(sl_checkpoint_shard(ck, 2, &file));
  CHECK(file && strcmp(file, "model-00003-of-00003.safetensors") == 0);
  sl_tensor_info info;
  CHECK_OK(sl_checkpoint_tensor(ck, 1, &info));
  CHECK(strcmp(info.file, "model-00002-of-00003.safetensors") == 0);

  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_ERR(sl_options_add_rename(opt, "s/^module\\."), SL_INVALID_ARGUMENT,
            "invalid rename rule 's/^module\\.': missing closing delimiter");
  CHECK_OK(sl_options_add_rename(opt, "s/^module\\.//"));
  /* "head.weight" is tied to l0 through an alias. */
  CHECK_OK(sl_options_add_alias(opt, "head.weight", "l0.weight"));
  CHECK_ERR(sl_options_add_alias(opt, "", "x"), SL_INVALID_ARGUMENT, "empty alias name");
  float r0[64], r1[64], r2[64], head[64];
  sl_target targets[4] = {
      {"l0.weight", 9, "F32", shape, 1, NULL, r0},
      {"l1.weight", 9, "F32", shape, 1, NULL, r1},
      {"l2.weight", 9, "F32", shape, 1, NULL, r2},
      {"head.weight", 11, "F32", shape, 1, NULL, head},
  };
  sl_report* report = NULL;
  CHECK_OK(sl_load_into(ck, targets, 4, opt, &report));
  CHECK(memcmp(r0, w0, sizeof w0) == 0);
  CHECK(memcmp(r1, w1, sizeof w1) == 0);
  CHECK(memcmp(r2, w2, sizeof w2) == 0);
  CHECK(memcmp(head, w0, sizeof w0) == 0);
  CHECK(sl_report_count(report, SL_REPORT_MATCHED) == 4);
  CHECK(sl_report_count(report, SL_REPORT_RENAMED) == 3);
  CHECK(sl_report_count(report, SL_REPORT_WARNINGS) == 0); /* a host load: nothing to say */
  const char *from = NULL, *to = NULL;
  CHECK_OK(sl_report_renamed(report, 0, &from, &to));
  CHECK(from && strcmp(from, "module.l0.weight") == 0 && strcmp(to, "l0.weight") == 0);
  sl_report_free(report);

  /* load_all applies the renames to the arena names. */
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  size_t i2 = 99;
  CHECK_OK(sl_loaded_find(loaded, "l2.weight", 9, &i2));
  sl_loaded_tensor lt;
  CHECK_OK(sl_loaded_get(loaded, i2, &lt));
  CHECK(memcmp(lt.data, w2, sizeof w2) == 0);
  sl_loaded_free(loaded);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* sl_load_all with targets: a subset, non-strict, into arenas. */
static void TestLoadAllWithTargets(void) {
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  sl_target targets[2] = {
      {"b", 1, "I64", kShapeB, 1, "cpu", NULL},
      {"a", 1, "F32", kShapeA, 2, NULL, NULL},
  };
  sl_loaded* loaded = NULL;
  sl_report* report = NULL;
  /* Strict: the other three stored tensors are unexpected. */
  CHECK_ERR(sl_load_all(ck, opt, targets, 2, &loaded, &report), SL_INVALID_ARGUMENT,
            "Error(s) in loading state_dict: Unexpected key(s) in state_dict: \"c\", \"f8\", "
            "\"n\\x00l\".");
  CHECK(loaded == NULL);
  CHECK(report != NULL && sl_report_count(report, SL_REPORT_UNEXPECTED) == 3);
  sl_report_free(report);
  CHECK_OK(sl_options_set_strict(opt, 0));
  CHECK_OK(sl_load_all(ck, opt, targets, 2, &loaded, &report));
  CHECK(sl_loaded_count(loaded) == 2);
  sl_loaded_tensor t;
  CHECK_OK(sl_loaded_get(loaded, 1, &t)); /* sorted: a, b */
  CHECK(t.name_len == 1 && t.name[0] == 'b' && memcmp(t.data, g_b, sizeof g_b) == 0);
  CHECK(sl_report_count(report, SL_REPORT_MATCHED) == 2);
  sl_report_free(report);
  sl_loaded_free(loaded);
  /* A data pointer is refused. */
  int64_t mine[4];
  targets[0].data = mine;
  loaded = (sl_loaded*)0x1;
  CHECK_ERR(sl_load_all(ck, opt, targets, 2, &loaded, NULL), SL_INVALID_ARGUMENT,
            "target 'b' has a data pointer: LoadAll places tensors in its own arenas (use "
            "LoadInto for caller memory)");
  CHECK(loaded == NULL);
  CHECK_ERR(sl_load_all(ck, opt, NULL, 2, &loaded, NULL), SL_INVALID_ARGUMENT,
            "targets is NULL but target_count is 2");
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

static int g_progress_calls = 0;
static uint64_t g_progress_first_done = 99;
static uint64_t g_progress_total = 0;

static int CancelAtOnce(uint64_t done, uint64_t total, void* user) {
  ++g_progress_calls;
  if (g_progress_calls == 1) g_progress_first_done = done;
  g_progress_total = total;
  return *(int*)user;
}

static void TestProgressAndCancel(void) {
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  int go_on = 1;
  CHECK_OK(sl_options_set_progress(opt, CancelAtOnce, &go_on));
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  CHECK(g_progress_calls >= 2);
  CHECK(g_progress_first_done == 0);
  CHECK(g_progress_total == 65);
  sl_loaded_free(loaded);

  go_on = 0;
  g_progress_calls = 0;
  loaded = (sl_loaded*)0x1;
  sl_status s = sl_load_all(ck, opt, NULL, 0, &loaded, NULL);
  CHECK(s == SL_CANCELLED);
  CHECK(sl_last_error_code() == SL_CANCELLED);
  CHECK(loaded == NULL);
  CHECK(g_progress_calls == 1);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* "file-phase" placement: each cpu tensor's address is congruent to its file offset
 * modulo 256, the bytes are the same, a DLPack export carries that address; a cast
 * tensor stays 256-byte aligned. */
static void TestHostPlacement(void) {
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_ERR(sl_options_set_host_placement(opt, "packed"), SL_INVALID_ARGUMENT,
            "invalid arena placement 'packed': expected aligned or file-phase");
  CHECK_ERR(sl_options_set_host_placement(opt, NULL), SL_INVALID_ARGUMENT, "placement is NULL");
  CHECK_ERR(sl_options_set_host_placement(NULL, "aligned"), SL_INVALID_ARGUMENT,
            "options is NULL");
  CHECK_OK(sl_options_set_host_placement(opt, "file-phase"));
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  if (loaded == NULL) return;
  int off_boundary = 0;
  for (size_t i = 0; i < sl_checkpoint_tensor_count(ck); ++i) {
    sl_tensor_info info;
    CHECK_OK(sl_checkpoint_tensor(ck, i, &info));
    size_t at = 99;
    CHECK_OK(sl_loaded_find(loaded, info.name, info.name_len, &at));
    sl_loaded_tensor t;
    CHECK_OK(sl_loaded_get(loaded, at, &t));
    if (t.bytes == 0) continue;
    CHECK((uintptr_t)t.data % 256 == info.file_offset % 256);
    off_boundary += info.file_offset % 256 != 0;
  }
  CHECK(off_boundary > 0);
  size_t ia = 99;
  CHECK_OK(sl_loaded_find(loaded, "a", 1, &ia));
  sl_loaded_tensor a;
  CHECK_OK(sl_loaded_get(loaded, ia, &a));
  CHECK(memcmp(a.data, g_a, sizeof g_a) == 0);
  DLManagedTensor* da = NULL;
  CHECK_OK(sl_loaded_export_dlpack(loaded, ia, 0, &da));
  if (da != NULL) {
    CHECK(da->dl_tensor.data == a.data && da->dl_tensor.byte_offset == 0);
    da->deleter(da);
  }
  sl_loaded_free(loaded);

  /* A cast target (a is F32, asked for as F16): 256-byte aligned under file-phase too. */
  CHECK_OK(sl_options_set_allow_cast(opt, 1));
  CHECK_OK(sl_options_set_strict(opt, 0));
  uint64_t shape[2] = {2, 3};
  sl_target target = {"a", 1, "F16", shape, 2, NULL, NULL};
  loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, &target, 1, &loaded, NULL));
  if (loaded != NULL) {
    CHECK_OK(sl_loaded_get(loaded, 0, &a));
    CHECK(strcmp(a.dtype, "F16") == 0 && (uintptr_t)a.data % 256 == 0);
    sl_loaded_free(loaded);
  }
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

static void TestOptionErrors(void) {
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_ERR(sl_options_set_device(opt, "gpu"), SL_INVALID_ARGUMENT,
            "invalid device-map entry 'gpu': invalid device 'gpu': expected cpu, cuda or cuda:N");
  CHECK_OK(sl_options_set_device(opt, "lm_head.*=cpu,cuda:1"));
  CHECK_OK(sl_options_set_device(opt, "cpu"));
  /* The lowest CUDA device a device or map names (-1: none), as the library reads it:
   * commas inside a regex pattern, and names that spell "cuda", are not devices. */
  {
    const struct {
      const char* map;
      int want;
    } cases[] = {{"cpu", -1},
                 {"cuda", 0},
                 {"cuda:2", 2},
                 {"lm_head.*=cuda:3,cuda:1", 1},
                 {"a.cuda=cpu,cpu", -1},
                 {"re:(x=cuda:1,y)=cpu,cpu", -1},
                 {"re:x\\.[0-9]{1,2}=cuda:2,cpu", 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
      int device = 7;
      CHECK_OK(sl_device_map_first_cuda(cases[i].map, &device));
      CHECK(device == cases[i].want);
    }
    int device = 7;
    CHECK_ERR(sl_device_map_first_cuda("gpu", &device), SL_INVALID_ARGUMENT,
              "invalid device-map entry 'gpu': invalid device 'gpu': expected cpu, cuda or cuda:N");
    CHECK_ERR(sl_device_map_first_cuda(NULL, &device), SL_INVALID_ARGUMENT,
              "device_or_map is NULL");
    CHECK_ERR(sl_device_map_first_cuda("cpu", NULL), SL_INVALID_ARGUMENT, "device is NULL");
  }
  CHECK_ERR(sl_options_set_threads(opt, -1), SL_INVALID_ARGUMENT,
            "threads must be between 0 and 256, got -1");
  CHECK_ERR(sl_options_set_threads(opt, 257), SL_INVALID_ARGUMENT,
            "threads must be between 0 and 256, got 257");
  CHECK_ERR(sl_options_set_io(opt, "fast"), SL_INVALID_ARGUMENT,
            "invalid io mode 'fast': expected auto, pread, mmap, direct or uring");
  CHECK_OK(sl_options_set_io(opt, "mmap"));
  CHECK_ERR(sl_options_set_strict(NULL, 1), SL_INVALID_ARGUMENT, "options is NULL");
  CHECK_ERR(sl_options_new(NULL), SL_INVALID_ARGUMENT, "out is NULL");

  /* With mmap and a checkpoint: still loads. */
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  CHECK(sl_loaded_count(loaded) == 5);
  sl_loaded_free(loaded);

  /* A cuda destination: loads where a CUDA device exists, else a clear error. */
  CHECK_OK(sl_options_set_device(opt, "cuda:0"));
  loaded = NULL;
  sl_status s = sl_load_all(ck, opt, NULL, 0, &loaded, NULL);
  /* sl_cuda_device_count agrees with what a load onto cuda:0 finds. */
  CHECK((s == SL_OK) == (sl_cuda_device_count() > 0));
  CHECK(sl_cuda_device_count() >= 0);
  if (s == SL_OK) {
    DLManagedTensor* d = NULL;
    CHECK_OK(sl_loaded_export_dlpack(loaded, 0, 0, &d));
    CHECK(d && d->dl_tensor.device.device_type == kDLCUDA && d->dl_tensor.device.device_id == 0);
    if (d) d->deleter(d);
    sl_loaded_free(loaded);
  } else {
    printf("  (no CUDA device: %s: %s)\n", sl_status_name(s), sl_last_error());
    CHECK(s == SL_INVALID_ARGUMENT);
    CHECK(strncmp(sl_last_error(), "cuda:0: no such CUDA device (0 devices", 38) == 0);
    CHECK(loaded == NULL);
  }
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* g_fake_cuda: run over libshardload_fake.so (the --fake-cuda argument of fake_capi_test). */
static int g_fake_cuda = 0;

/* A GPU load whose staging memory cannot be pinned (the fake runtime's
 * SHARDLOAD_FAKE_CUDA_CANNOT_PIN, so only over the fake) stages through pageable memory
 * and says so in its report's SL_REPORT_WARNINGS, from sl_load_all and sl_load_into;
 * once memory can be pinned again and the kept ring is released, the next load says
 * nothing. */
static void TestPageableStagingWarns(void) {
  /* The ring an earlier GPU load left (none without a device) is released, so the
   * loads below allocate theirs. */
  const uint64_t held = sl_cuda_staging_bytes();
  CHECK(held == (sl_cuda_device_count() > 0 ? 256ull << 20 : 0));
  CHECK(sl_cuda_release_staging() == held);
  CHECK(sl_cuda_staging_bytes() == 0);
  CHECK(sl_cuda_release_staging() == 0);
  if (!g_fake_cuda) {
    printf("  (needs the fake CUDA runtime: fake_capi_test)\n");
    return;
  }
  static const char kPrefix[] =
      "pinned staging memory was refused (cudaHostRegister: cudaErrorNotSupported: "
      "operation not supported (allocating ";
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_options_set_device(opt, "cuda:0"));
  setenv("SHARDLOAD_FAKE_CUDA_CANNOT_PIN", "1", 1);
  sl_loaded* loaded = NULL;
  sl_report* report = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, &report));
  CHECK(sl_report_count(report, SL_REPORT_WARNINGS) == 1);
  const char* line = NULL;
  size_t len = 0;
  CHECK_OK(sl_report_item(report, SL_REPORT_WARNINGS, 0, &line, &len));
  CHECK(line != NULL && len > sizeof kPrefix - 1 && memcmp(line, kPrefix, sizeof kPrefix - 1) == 0);
  CHECK(strstr(sl_report_json(report), "pinned") == NULL); /* the JSON is the match report */
  sl_report_free(report);

  /* sl_load_into onto the same device memory: the same line. */
  size_t n = sl_loaded_count(loaded);
  sl_target targets[8];
  CHECK(n > 0 && n <= 8);
  for (size_t i = 0; i < n && i < 8; ++i) {
    sl_loaded_tensor t;
    CHECK_OK(sl_loaded_get(loaded, i, &t));
    sl_target target = {t.name, t.name_len, t.dtype, t.shape, t.ndim, t.device, t.data};
    targets[i] = target;
  }
  report = NULL;
  CHECK_OK(sl_load_into(ck, targets, n, opt, &report));
  CHECK(sl_report_count(report, SL_REPORT_WARNINGS) == 1);
  CHECK_OK(sl_report_item(report, SL_REPORT_WARNINGS, 0, &line, &len));
  CHECK(line != NULL && len > sizeof kPrefix - 1 && memcmp(line, kPrefix, sizeof kPrefix - 1) == 0);
  sl_report_free(report);

  CHECK(sl_cuda_staging_bytes() == 256ull << 20); /* the pageable ring, kept */

  /* Pinning works again, but a platform that refused outright is not asked again
   * while the pageable ring is kept: the next load still warns. Once the ring is
   * released, the next load asks, is granted, and says nothing. */
  unsetenv("SHARDLOAD_FAKE_CUDA_CANNOT_PIN");
  report = NULL;
  CHECK_OK(sl_load_into(ck, targets, n, opt, &report));
  CHECK(sl_report_count(report, SL_REPORT_WARNINGS) == 1);
  sl_report_free(report);
  CHECK(sl_cuda_release_staging() == 256ull << 20);
  report = NULL;
  CHECK_OK(sl_load_into(ck, targets, n, opt, &report));
  CHECK(sl_report_count(report, SL_REPORT_WARNINGS) == 0);
  sl_report_free(report);
  CHECK(sl_cuda_release_staging() == 256ull << 20); /* now a pinned ring */
  sl_loaded_free(loaded);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

static void TestFreeNullAndWriteErrors(void) {
  sl_checkpoint_free(NULL);
  sl_options_free(NULL);
  sl_report_free(NULL);
  sl_loaded_free(NULL);
  CHECK(sl_checkpoint_tensor_count(NULL) == 0);
  CHECK(sl_checkpoint_warning_count(NULL) == 0);
  CHECK(sl_loaded_count(NULL) == 0);
  CHECK(sl_report_count(NULL, SL_REPORT_MISSING) == 0);
  CHECK(strcmp(sl_report_json(NULL), "") == 0);

  float x[2] = {1, 2};
  uint64_t shape[1] = {3};
  sl_tensor_view bad = {"x", 1, "F32", shape, 1, x};
  /* The writer sees only the bytes the shape implies; a duplicate name is refused. */
  sl_tensor_view dup[2] = {{"x", 1, "F32", shape, 1, x}, {"x", 1, "F32", shape, 1, x}};
  (void)bad;
  char expect[8300];
  snprintf(expect, sizeof expect, "%s: duplicate tensor name 'x'", Path("dup.safetensors"));
  CHECK_ERR(sl_save_file(Path("dup.safetensors"), dup, 2, NULL, NULL, 0), SL_INVALID_ARGUMENT,
            expect);
  sl_tensor_view unknown = {"x", 1, "F128", shape, 1, x};
  snprintf(expect, sizeof expect, "%s: tensor 'x': unknown dtype 'F128'", Path("u.safetensors"));
  CHECK_ERR(sl_save_file(Path("u.safetensors"), &unknown, 1, NULL, NULL, 0), SL_INVALID_ARGUMENT,
            expect);
}


/* Zero-element tensors may declare dimensions past INT64_MAX (the format allows any
 * 64-bit value when another dimension is 0): DLPack's int64_t cannot hold them, so the
 * export is refused rather than handing out a negative shape. A NULL name with a length
 * is refused when saving. */
static void TestDlpackHugeDimsAndNullNames(void) {
  const uint64_t huge[2] = {0, 1ull << 63};
  const uint64_t big[2] = {0, 1ull << 62};
  sl_tensor_view views[2] = {{"huge", 4, "F32", huge, 2, NULL}, {"big", 3, "F32", big, 2, NULL}};
  CHECK_OK(sl_save_file(Path("hugedims.safetensors"), views, 2, NULL, NULL, 0));
  sl_checkpoint* ck = NULL;
  sl_options* opt = NULL;
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_checkpoint_open(Path("hugedims.safetensors"), &ck));
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  size_t ih = 99, ib = 99;
  CHECK_OK(sl_loaded_find(loaded, "huge", 4, &ih));
  CHECK_OK(sl_loaded_find(loaded, "big", 3, &ib));
  DLManagedTensor* dl = NULL;
  CHECK_ERR(sl_loaded_export_dlpack(loaded, ih, 0, &dl), SL_OUT_OF_RANGE,
            "tensor 'huge': dimension 1 (9223372036854775808) does not fit DLPack's int64_t");
  CHECK(dl == NULL);
  /* 2^62 fits as F32 elements, not as bytes (4 * 2^62). */
  CHECK_OK(sl_loaded_export_dlpack(loaded, ib, 0, &dl));
  CHECK(dl != NULL && dl->dl_tensor.shape[0] == 0 && dl->dl_tensor.shape[1] == (int64_t)(1ull << 62));
  if (dl != NULL) dl->deleter(dl);
  dl = NULL;
  CHECK_ERR(sl_loaded_export_dlpack(loaded, ib, SL_DLPACK_AS_BYTES, &dl), SL_OUT_OF_RANGE,
            "tensor 'big': dimension 1 (4611686018427387904) times 4 bytes does not fit "
            "DLPack's int64_t");
  sl_loaded_free(loaded);
  sl_options_free(opt);
  sl_checkpoint_free(ck);

  /* A sub-byte dtype exports as its bytes, [0]: its declared dimensions do not matter. */
  sl_tensor_view f4 = {"f4", 2, "F4", huge, 2, NULL};
  CHECK_OK(sl_save_file(Path("hugef4.safetensors"), &f4, 1, NULL, NULL, 0));
  CHECK_OK(sl_checkpoint_open(Path("hugef4.safetensors"), &ck));
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  dl = NULL;
  CHECK_OK(sl_loaded_export_dlpack(loaded, 0, SL_DLPACK_AS_BYTES, &dl));
  CHECK(dl != NULL && dl->dl_tensor.ndim == 1 && dl->dl_tensor.shape[0] == 0);
  if (dl != NULL) dl->deleter(dl);
  sl_loaded_free(loaded);
  sl_options_free(opt);
  sl_checkpoint_free(ck);

  float x[1] = {1};
  uint64_t one[1] = {1};
  sl_tensor_view unnamed = {NULL, 5, "F32", one, 1, x};
  char expect[8300];
  snprintf(expect, sizeof expect, "%s: tensor 0 has a NULL name of 5 bytes",
           Path("unnamed.safetensors"));
  CHECK_ERR(sl_save_file(Path("unnamed.safetensors"), &unnamed, 1, NULL, NULL, 0),
            SL_INVALID_ARGUMENT, expect);
  CHECK(access(Path("unnamed.safetensors"), F_OK) != 0);
}

/* Failed loads still hand back their report (also without targets, where the loader
 * makes one target per stored tensor); a cancelled token wins over a strict failure;
 * a zero-byte tensor's data is NULL; NULL alias names are named. */
static int StopAtOnce(uint64_t done, uint64_t total, void* user) {
  (void)done;
  (void)total;
  (void)user;
  return 0;
}

static void TestFailedLoadReportsAndZeroBytes(void) {
  sl_checkpoint* ck = NULL;
  sl_options* opt = NULL;
  sl_loaded* loaded = NULL;
  sl_report* report = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_options_set_progress(opt, StopAtOnce, NULL));
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, &report), SL_CANCELLED,
            "load cancelled by the progress callback");
  CHECK(loaded == NULL && report != NULL);
  CHECK(sl_report_count(report, SL_REPORT_MATCHED) == 5);
  sl_report_free(report);
  report = NULL;
  CHECK_OK(sl_options_set_progress(opt, NULL, NULL));

  sl_cancel_token* token = NULL;
  CHECK_OK(sl_cancel_token_new(&token));
  CHECK_OK(sl_cancel_token_cancel(token));
  CHECK_OK(sl_options_set_cancel_token(opt, token));
  uint64_t shape[1] = {3};
  float buf[3];
  sl_target missing = {"not_there", 9, "F32", shape, 1, NULL, buf};
  CHECK_ERR(sl_load_into(ck, &missing, 1, opt, &report), SL_CANCELLED, "load cancelled");
  CHECK(report == NULL);
  sl_target no_data = {"not_there", 9, "F32", shape, 1, NULL, NULL};
  CHECK_ERR(sl_load_all(ck, opt, &no_data, 1, &loaded, &report), SL_CANCELLED, "load cancelled");
  CHECK(loaded == NULL && report == NULL);
  sl_cancel_token_free(token);
  CHECK_OK(sl_options_set_cancel_token(opt, NULL));

  CHECK_ERR(sl_options_add_alias(opt, NULL, "a"), SL_INVALID_ARGUMENT, "target_name is NULL");
  CHECK_ERR(sl_options_add_alias(opt, "x", NULL), SL_INVALID_ARGUMENT, "stored_name is NULL");
  CHECK_ERR(sl_options_add_alias(opt, "", "a"), SL_INVALID_ARGUMENT, "empty alias name");
  sl_checkpoint_free(ck);

  uint64_t s23[2] = {2, 3}, s0[1] = {0};
  float a[6] = {1, 2, 3, 4, 5, 6};
  sl_tensor_view views[2] = {{"a", 1, "F32", s23, 2, a}, {"z", 1, "F32", s0, 1, NULL}};
  CHECK_OK(sl_save_file(Path("zero.safetensors"), views, 2, NULL, NULL, 0));
  CHECK_OK(sl_checkpoint_open(Path("zero.safetensors"), &ck));
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  size_t iz = 99, ia = 99;
  CHECK_OK(sl_loaded_find(loaded, "z", 1, &iz));
  CHECK_OK(sl_loaded_find(loaded, "a", 1, &ia));
  sl_loaded_tensor tz, ta;
  CHECK_OK(sl_loaded_get(loaded, iz, &tz));
  CHECK_OK(sl_loaded_get(loaded, ia, &ta));
  CHECK(tz.data == NULL && tz.bytes == 0);
  CHECK(ta.data != NULL && ta.bytes == 24 && memcmp(ta.data, a, 24) == 0);
  sl_loaded_free(loaded);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* LoadedNamed: tensor `name` of a loaded result into *out; 1 when found, else 0. */
static int LoadedNamed(const sl_loaded* loaded, const char* name, sl_loaded_tensor* out) {
  size_t index = 0;
  return sl_loaded_find(loaded, name, strlen(name), &index) == SL_OK &&
         sl_loaded_get(loaded, index, out) == SL_OK;
}

/* LoadedData: the data pointer of tensor `name` of a loaded result (NULL if absent). */
static void* LoadedData(const sl_loaded* loaded, const char* name) {
  sl_loaded_tensor t;
  return LoadedNamed(loaded, name, &t) ? t.data : NULL;
}

/* Reads keep the shard they first opened; sl_checkpoint_hold_files pins every shard
 * at once: the same names saved again, or the file deleted, do not change what a
 * checkpoint handle reads (safetensors' safe_open maps its file at open). */
static void TestReadsKeepTheirFiles(void) {
  uint64_t shape[1] = {4};
  float v1[4] = {1, 2, 3, 4}, v2[4] = {5, 6, 7, 8};
  sl_tensor_view first = {"w", 1, "F32", shape, 1, v1};
  sl_tensor_view second = {"w", 1, "F32", shape, 1, v2};
  char path[8300];
  snprintf(path, sizeof path, "%s", Path("held.safetensors"));  /* Path's buffer is reused */
  float got[4] = {0};
  for (int hold = 0; hold < 2; ++hold) {
    CHECK_OK(sl_save_file(path, &first, 1, NULL, NULL, 0));
    sl_checkpoint* ck = NULL;
    CHECK_OK(sl_checkpoint_open(path, &ck));
    if (hold) {
      CHECK_OK(sl_checkpoint_hold_files(ck));
    } else {
      CHECK_OK(sl_checkpoint_read(ck, 0, 0, 4, got));  /* the first read opens it */
    }
    CHECK_OK(sl_save_file(path, &second, 1, NULL, NULL, 0));  /* same layout, new values */
    CHECK_OK(sl_checkpoint_read(ck, 0, 0, sizeof got, got));
    CHECK(memcmp(got, v1, sizeof got) == 0);
    CHECK(unlink(path) == 0);
    memset(got, 0, sizeof got);
    CHECK_OK(sl_checkpoint_read(ck, 0, 4, 8, got));
    CHECK(got[0] == 2 && got[1] == 3);
    /* Loads from the handle read the held file too, whatever the io mode. */
    sl_options* opt = NULL;
    sl_loaded* loaded = NULL;
    CHECK_OK(sl_options_new(&opt));
    CHECK_OK(sl_options_set_io(opt, hold ? "mmap" : "pread"));
    CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
    sl_loaded_tensor t;
    CHECK_OK(sl_loaded_get(loaded, 0, &t));
    CHECK(t.bytes == 16 && memcmp(t.data, v1, 16) == 0);
    sl_loaded_free(loaded);
    sl_options_free(opt);
    sl_checkpoint_free(ck);
  }
  CHECK_ERR(sl_checkpoint_hold_files(NULL), SL_INVALID_ARGUMENT, "checkpoint is NULL");

  /* A held file written to in place (same inode) with another header: aborted from
   * reads and loads, never the old offsets read in the new bytes. */
  sl_tensor_view renamed = {"x", 1, "F32", shape, 1, v2};
  CHECK_OK(sl_save_file(path, &first, 1, NULL, NULL, 0));
  CHECK_OK(sl_save_file(Path("other.safetensors"), &renamed, 1, NULL, NULL, 0));
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(path, &ck));
  CHECK_OK(sl_checkpoint_hold_files(ck));
  char bytes[4096];
  FILE* in = fopen(Path("other.safetensors"), "rb");
  size_t n = in != NULL ? fread(bytes, 1, sizeof bytes, in) : 0;
  if (in != NULL) fclose(in);
  FILE* out = fopen(path, "r+b");
  CHECK(out != NULL && n > 0);
  if (out != NULL) {
    CHECK(fwrite(bytes, 1, n, out) == n);
    fclose(out);
  }
  /* A later write's time (this one may fall in the same timestamp tick as the save). */
  struct timespec times[2] = {{12345, 0}, {12345, 0}};
  CHECK(utimensat(AT_FDCWD, path, times, 0) == 0);
  const char* want =
      "held.safetensors: file was replaced since the checkpoint was opened and its header "
      "differs (open the checkpoint again)";
  CHECK_ERR(sl_checkpoint_read(ck, 0, 0, sizeof got, got), SL_ABORTED, want);
  sl_options* opt = NULL;
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_ABORTED, want);
  CHECK(loaded == NULL);
  sl_options_free(opt);
  sl_checkpoint_free(ck);

  /* A path replaced by another layout before the first read: aborted, and the file
   * is not kept, so once the shard is put back as it was, reads and loads work. */
  CHECK_OK(sl_save_file(path, &first, 1, NULL, NULL, 0));
  CHECK_OK(sl_checkpoint_open(path, &ck));
  CHECK_OK(sl_save_file(path, &renamed, 1, NULL, NULL, 0));
  CHECK_ERR(sl_checkpoint_read(ck, 0, 0, sizeof got, got), SL_ABORTED, want);
  CHECK_ERR(sl_checkpoint_hold_files(ck), SL_ABORTED, want);
  CHECK_OK(sl_save_file(path, &first, 1, NULL, NULL, 0));
  memset(got, 0, sizeof got);
  CHECK_OK(sl_checkpoint_read(ck, 0, 0, sizeof got, got));
  CHECK(memcmp(got, v1, sizeof got) == 0);
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  sl_loaded_free(loaded);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* CountOpenFds: entries of /proc/self/fd (-1 when unreadable). */
static int CountOpenFds(void) {
  DIR* d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0;
  while (readdir(d) != NULL) ++n;
  closedir(d);
  return n;
}

/* A handle keeps at most 64 shards open on its own; sl_checkpoint_hold_files keeps all. */
static void TestKeptFilesAreBounded(void) {
  enum { kShards = 80 };
  static float values[kShards];
  static char names[kShards][8];
  static uint64_t one[1] = {1};
  sl_tensor_view views[kShards];
  for (int i = 0; i < kShards; ++i) {
    values[i] = (float)i;
    snprintf(names[i], sizeof names[i], "t%02d", i % 100); /* kShards < 100 */
    views[i] = (sl_tensor_view){names[i], 3, "F32", one, 1, &values[i]};
  }
  char dir[8300];
  snprintf(dir, sizeof dir, "%s", Path("many"));
  mkdir(dir, 0755);
  CHECK_OK(sl_save_sharded(dir, views, kShards, "4B", NULL, NULL, NULL, 0));
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(dir, &ck));
  CHECK(sl_checkpoint_shard_count(ck) == kShards);
  int before = CountOpenFds();
  for (size_t i = 0; i < kShards; ++i) {
    float got = -1;
    CHECK_OK(sl_checkpoint_read(ck, i, 0, 4, &got));
    CHECK(got == (float)i);
  }
  int kept = CountOpenFds() - before;
  CHECK(kept == 64);
  CHECK_OK(sl_checkpoint_hold_files(ck));
  CHECK(CountOpenFds() - before == kShards);
  sl_checkpoint_free(ck);
  CHECK(CountOpenFds() == before);
}

/* SaveTwoShards: F32[4] tensors "a" and "b" as two 16-byte shards in the existing
 * folder `dir` (sl_save_sharded). */
static void SaveTwoShards(const char* dir, float a[4], float b[4]) {
  static uint64_t four[1] = {4};
  sl_tensor_view views[2] = {{"a", 1, "F32", four, 1, a}, {"b", 1, "F32", four, 1, b}};
  CHECK_OK(sl_save_sharded(dir, views, 2, "16B", NULL, NULL, NULL, 0));
}

/* The files a handle keeps are of one save: once a rewrite of the same layout has
 * replaced a kept shard, a load that would read it next to shards opened now fails
 * (it would mix two saves), a read of another shard sees the new file without keeping
 * it, and sl_checkpoint_hold_files refuses; a kept file removed from disk likewise. */
static void TestKeptFilesAreOfOneSave(void) {
  float old_a[4] = {1, 2, 3, 4}, old_b[4] = {5, 6, 7, 8};
  float new_a[4] = {9, 10, 11, 12}, new_b[4] = {13, 14, 15, 16};
  char dir[8300];
  snprintf(dir, sizeof dir, "%s", Path("onesave"));
  mkdir(dir, 0755);
  SaveTwoShards(dir, old_a, old_b);
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(dir, &ck));
  CHECK(sl_checkpoint_shard_count(ck) == 2);
  size_t ia = 99, ib = 99;
  for (size_t i = 0; i < sl_checkpoint_tensor_count(ck); ++i) {
    sl_tensor_info info;
    CHECK_OK(sl_checkpoint_tensor(ck, i, &info));
    if (strcmp(info.name, "a") == 0) ia = i;
    if (strcmp(info.name, "b") == 0) ib = i;
  }
  CHECK(ia < 2 && ib < 2);
  sl_tensor_info info_a;
  CHECK_OK(sl_checkpoint_tensor(ck, ia, &info_a));
  char file_a[256];  /* info_a.file is the handle's: copied to outlive it */
  snprintf(file_a, sizeof file_a, "%s", info_a.file);
  char want[8600];
  snprintf(want, sizeof want,
           "%s: replaced on disk since this checkpoint handle opened it, so it and the shards "
           "opened now would be of two saves (open the checkpoint again)",
           file_a);
  float got[4] = {0};
  /* While a writer holds the folder's lock, a read goes ahead (it never waits) but keeps
   * nothing: the file it opened could be of the save being published. */
  int writer = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(writer >= 0 && flock(writer, LOCK_EX) == 0);
  int fds_before = CountOpenFds();
  CHECK_OK(sl_checkpoint_read(ck, ia, 0, sizeof got, got));
  CHECK(memcmp(got, old_a, sizeof got) == 0);
  CHECK(CountOpenFds() == fds_before);
  close(writer);
  fds_before = CountOpenFds();
  CHECK_OK(sl_checkpoint_read(ck, ia, 0, sizeof got, got));  /* keeps a's shard */
  CHECK(memcmp(got, old_a, sizeof got) == 0);
  CHECK(CountOpenFds() == fds_before + 1);
  SaveTwoShards(dir, new_a, new_b);

  sl_options* opt = NULL;
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_ABORTED, want);
  CHECK(loaded == NULL);
  int fds = CountOpenFds();
  CHECK_OK(sl_checkpoint_read(ck, ib, 0, sizeof got, got));  /* the new b, read once */
  CHECK(memcmp(got, new_b, sizeof got) == 0);
  CHECK(CountOpenFds() == fds);                                /* and not kept */
  CHECK_OK(sl_checkpoint_read(ck, ia, 0, sizeof got, got));  /* the kept a: still old */
  CHECK(memcmp(got, old_a, sizeof got) == 0);
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_ABORTED, want);
  CHECK_ERR(sl_checkpoint_hold_files(ck), SL_ABORTED, want);
  sl_checkpoint_free(ck);

  /* A fresh handle holding every file reads the new save whole. */
  CHECK_OK(sl_checkpoint_open(dir, &ck));
  CHECK_OK(sl_checkpoint_hold_files(ck));
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  sl_loaded_tensor ta, tb;
  CHECK(LoadedNamed(loaded, "a", &ta) && LoadedNamed(loaded, "b", &tb));
  CHECK(ta.bytes == 16 && memcmp(ta.data, new_a, 16) == 0);
  CHECK(tb.bytes == 16 && memcmp(tb.data, new_b, 16) == 0);
  sl_loaded_free(loaded);
  sl_checkpoint_free(ck);

  /* A kept file whose path was removed. */
  CHECK_OK(sl_checkpoint_open(dir, &ck));
  CHECK_OK(sl_checkpoint_read(ck, ia, 0, sizeof got, got));
  char kept_path[8700];
  snprintf(kept_path, sizeof kept_path, "%s/%s", dir, file_a);
  CHECK(unlink(kept_path) == 0);
  snprintf(want, sizeof want,
           "%s: removed from disk since this checkpoint handle opened it, so it and the shards "
           "opened now would be of two saves (open the checkpoint again)",
           file_a);
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_ABORTED, want);
  sl_checkpoint_free(ck);
  sl_options_free(opt);
}

/* A single file takes no folder lock: while another process holds its folder's lock
 * (any user who can read /tmp could), its opens, reads, holds and loads go ahead. */
static void TestASingleFileIgnoresTheFolderLock(void) {
  static uint64_t four[1] = {4};
  float a[4] = {1, 2, 3, 4};
  sl_tensor_view view = {"a", 1, "F32", four, 1, a};
  char dir[8300], file[8400];
  snprintf(dir, sizeof dir, "%s", Path("single_nolock"));
  mkdir(dir, 0755);
  snprintf(file, sizeof file, "%s/w.safetensors", dir);
  CHECK_OK(sl_save_file(file, &view, 1, NULL, NULL, 0));
  int holder = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(holder >= 0 && flock(holder, LOCK_EX) == 0);
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(file, &ck));
  float got[4] = {0};
  CHECK_OK(sl_checkpoint_read(ck, 0, 0, sizeof got, got));
  CHECK(memcmp(got, a, sizeof got) == 0);
  CHECK_OK(sl_checkpoint_hold_files(ck));
  sl_options* opt = NULL;
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  sl_loaded_free(loaded);
  sl_checkpoint_free(ck);
  CHECK_OK(sl_checkpoint_open(file, &ck));  /* a fresh handle: files opened by the load */
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  sl_loaded_free(loaded);
  sl_checkpoint_free(ck);
  sl_options_free(opt);
  close(holder);
}

/* CancelAfter: cancels the token `arg` 0.2 s after it starts. */
static void* CancelAfter(void* arg) {
  struct timespec ts = {0, 200 * 1000 * 1000};
  nanosleep(&ts, NULL);
  sl_cancel_token_cancel((sl_cancel_token*)arg);
  return NULL;
}

/* A cancel token stops opens and loads waiting for the folder's lock, which a writer
 * publishing a rewrite holds (taken here with flock, as format/folder_lock.cc does). */
static void TestCancelWhileWaitingForTheFolderLock(void) {
  float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
  char dir[8300];
  snprintf(dir, sizeof dir, "%s", Path("lockwait"));
  mkdir(dir, 0755);
  SaveTwoShards(dir, a, b);
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open_with(dir, NULL, &ck));  /* NULL options: a plain open */
  sl_options* opt = NULL;
  sl_cancel_token* token = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_cancel_token_new(&token));
  CHECK_OK(sl_options_set_cancel_token(opt, token));
  int writer = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(writer >= 0 && flock(writer, LOCK_EX) == 0);

  pthread_t t;
  CHECK(pthread_create(&t, NULL, CancelAfter, token) == 0);
  sl_loaded* loaded = NULL;
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_CANCELLED, "load cancelled");
  CHECK(loaded == NULL);
  pthread_join(t, NULL);

  sl_checkpoint* waiting = NULL;
  char want[8400];
  snprintf(want, sizeof want, "%s: stopped while waiting for the folder's lock", dir);
  CHECK_ERR(sl_checkpoint_open_with(dir, opt, &waiting), SL_CANCELLED, want);
  CHECK(waiting == NULL);
  close(writer);  /* the writer is done: both go through with a fresh token */
  sl_cancel_token_free(token);
  CHECK_OK(sl_cancel_token_new(&token));
  CHECK_OK(sl_options_set_cancel_token(opt, token));
  CHECK_OK(sl_checkpoint_open_with(dir, opt, &waiting));
  CHECK_OK(sl_load_all(waiting, opt, NULL, 0, &loaded, NULL));
  sl_loaded_free(loaded);
  sl_checkpoint_free(waiting);
  sl_cancel_token_free(token);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* WriteIndex: `text` as dir/model.safetensors.index.json; 0 (a failed CHECK) when the
 * file cannot be written. */
static int WriteIndex(const char* dir, const char* text) {
  char index[8400];
  snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
  FILE* f = fopen(index, "w");
  CHECK(f != NULL);
  if (f == NULL) return 0;
  fputs(text, f);
  return fclose(f) == 0;
}

/* Catalog warnings: an index listing nothing opens, and says so. */
static void TestCheckpointWarnings(void) {
  char dir[8300];
  snprintf(dir, sizeof dir, "%s", Path("emptymap"));
  mkdir(dir, 0755);
  if (!WriteIndex(dir, "{\"metadata\": {}, \"weight_map\": {}}")) return;
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(dir, &ck));
  CHECK(sl_checkpoint_tensor_count(ck) == 0);
  CHECK(sl_checkpoint_warning_count(ck) == 1);
  const char* w = NULL;
  CHECK_OK(sl_checkpoint_warning(ck, 0, &w));
  CHECK(w != NULL && strcmp(w, "model.safetensors.index.json: weight_map is empty; the "
                               "checkpoint has no tensors") == 0);
  CHECK_ERR(sl_checkpoint_warning(ck, 1, &w), SL_OUT_OF_RANGE,
            "warning index 1 is out of range (1 warnings)");
  sl_checkpoint_free(ck);
}

/* A shard holding a tensor its index does not list: sl_checkpoint_open refuses it;
 * sl_checkpoint_open_with options of sl_options_set_strict_index(0) opens it with the
 * tensor in the catalog (loaded like the others) and a warning naming it. */
static void TestLenientIndex(void) {
  char dir[8300];
  snprintf(dir, sizeof dir, "%s", Path("unlisted"));
  mkdir(dir, 0755);
  /* One shard holding "a" and "b", under an index that lists only "a". */
  float ab[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  static uint64_t four[1] = {4};
  sl_tensor_view views[2] = {{"a", 1, "F32", four, 1, ab}, {"b", 1, "F32", four, 1, ab + 4}};
  CHECK_OK(sl_save_sharded(dir, views, 2, "1GB", NULL, NULL, NULL, 0));  /* model.safetensors */
  char single[8400], shard[8400];
  snprintf(single, sizeof single, "%s/model.safetensors", dir);
  snprintf(shard, sizeof shard, "%s/model-00001-of-00001.safetensors", dir);
  CHECK(rename(single, shard) == 0);
  if (!WriteIndex(dir, "{\"weight_map\": {\"a\": \"model-00001-of-00001.safetensors\"}}")) return;
  sl_checkpoint* ck = NULL;
  const char* want = "model.safetensors.index.json: shard 'model-00001-of-00001.safetensors' "
                     "holds tensor 'b', which the index does not list";
  CHECK_ERR(sl_checkpoint_open(dir, &ck), SL_INVALID_ARGUMENT, want);
  CHECK(ck == NULL);
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_ERR(sl_checkpoint_open_with(dir, opt, &ck), SL_INVALID_ARGUMENT, want);
  CHECK_OK(sl_options_set_strict_index(opt, 0));
  CHECK_OK(sl_checkpoint_open_with(dir, opt, &ck));
  CHECK(sl_checkpoint_tensor_count(ck) == 2);
  CHECK(sl_checkpoint_warning_count(ck) == 1);
  const char* w = NULL;
  CHECK_OK(sl_checkpoint_warning(ck, 0, &w));
  CHECK(w != NULL && strcmp(w, want) == 0);
  float got[8] = {0};
  sl_target targets[2] = {{"a", 1, "F32", four, 1, "cpu", got}, {"b", 1, "F32", four, 1, "cpu", got + 4}};
  CHECK_OK(sl_load_into(ck, targets, 2, opt, NULL));
  CHECK(memcmp(got, ab, sizeof got) == 0);
  CHECK_ERR(sl_options_set_strict_index(NULL, 0), SL_INVALID_ARGUMENT, "options is NULL");
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* Cancel tokens: a cancelled token fails loads with SL_CANCELLED and frees what they
 * allocated; cancel works from another thread; the options keep the token alive. */
static sl_cancel_token* g_token = NULL;

static void* CancelFromThread(void* arg) {
  (void)arg;
  sl_cancel_token_cancel(g_token);
  return NULL;
}

static int CancelOnFirstCall(uint64_t done, uint64_t total, void* user) {
  (void)total;
  (void)user;
  if (done == 0) {  /* before any read: another thread cancels, and is waited for */
    pthread_t t;
    pthread_create(&t, NULL, CancelFromThread, NULL);
    pthread_join(t, NULL);
  }
  return 1;
}

static void TestCancelToken(void) {
  sl_checkpoint* ck = NULL;
  sl_options* opt = NULL;
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_cancel_token_new(&g_token));
  CHECK(sl_cancel_token_is_cancelled(g_token) == 0);
  CHECK_OK(sl_options_set_cancel_token(opt, g_token));
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));  /* not cancelled: loads */
  sl_loaded_free(loaded);
  loaded = NULL;

  size_t live = sl_live_arena_sets();
  CHECK_OK(sl_options_set_progress(opt, CancelOnFirstCall, NULL));
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_CANCELLED, "load cancelled");
  CHECK(loaded == NULL && sl_live_arena_sets() == live);
  CHECK(sl_cancel_token_is_cancelled(g_token) == 1);
  /* It stays cancelled, also with the handle freed (the options hold it). */
  sl_cancel_token_free(g_token);
  g_token = NULL;
  CHECK_OK(sl_options_set_progress(opt, NULL, NULL));
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_CANCELLED, "load cancelled");
  CHECK_OK(sl_options_set_cancel_token(opt, NULL));  /* detached: loads again */
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  sl_loaded_free(loaded);

  CHECK_ERR(sl_cancel_token_new(NULL), SL_INVALID_ARGUMENT, "out is NULL");
  CHECK_ERR(sl_cancel_token_cancel(NULL), SL_INVALID_ARGUMENT, "token is NULL");
  CHECK(sl_cancel_token_is_cancelled(NULL) == 0);
  CHECK_ERR(sl_options_set_cancel_token(NULL, NULL), SL_INVALID_ARGUMENT, "options is NULL");
  sl_cancel_token_free(NULL);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* A device map on a host-only machine: entries that name a cuda device but match no
 * tensor cost nothing; a matching one fails with the missing device. */
static void TestDeviceMapOnHost(void) {
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), &ck));
  if (ck == NULL) return;
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_options_set_device(opt, "lm_head.*=cuda:0,a=cpu,cpu"));
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  CHECK(sl_loaded_count(loaded) == 5);
  for (size_t i = 0; i < sl_loaded_count(loaded); ++i) {
    sl_loaded_tensor t;
    CHECK_OK(sl_loaded_get(loaded, i, &t));
    CHECK(strcmp(t.device, "cpu") == 0);
  }
  sl_loaded_free(loaded);
  CHECK_OK(sl_options_set_device(opt, "b=cuda:0,cpu"));
  loaded = NULL;
  sl_status s = sl_load_all(ck, opt, NULL, 0, &loaded, NULL);
  if (s == SL_OK) {  /* a machine with a CUDA device */
    size_t b = 99;
    sl_loaded_tensor t;
    CHECK_OK(sl_loaded_find(loaded, "b", 1, &b));
    CHECK_OK(sl_loaded_get(loaded, b, &t));
    CHECK(strcmp(t.device, "cuda:0") == 0);
    sl_loaded_free(loaded);
  } else {
    CHECK(s == SL_INVALID_ARGUMENT);
    CHECK(strncmp(sl_last_error(), "cuda:0: no such CUDA device (0 devices", 38) == 0);
    CHECK(loaded == NULL);
  }
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* ---------------------------------------------------------------- host memory pool */

/* IsMapped: 1 when the page holding `p` is mapped in this process, 0 when it is not
 * (mincore fails with ENOMEM), -1 on any other outcome. */
static int IsMapped(const void* p) {
  long page = sysconf(_SC_PAGESIZE);
  void* base = (void*)((uintptr_t)p / (uintptr_t)page * (uintptr_t)page);
  unsigned char vec[1];
  if (mincore(base, (size_t)page, vec) == 0) return 1;
  return errno == ENOMEM ? 0 : -1;
}

/* CheckSingleBytes: every tensor of a single.safetensors load holds the fixture bytes. */
static void CheckSingleBytes(const sl_loaded* loaded) {
  struct {
    const char* name;
    size_t len;
    const void* bytes;
    uint64_t size;
  } want[5] = {{"a", 1, g_a, sizeof g_a},
               {"b", 1, g_b, sizeof g_b},
               {"c", 1, g_c, sizeof g_c},
               {"n\0l", 3, g_nul, sizeof g_nul},
               {"f8", 2, g_f8, sizeof g_f8}};
  CHECK(sl_loaded_count(loaded) == 5);
  for (int i = 0; i < 5; ++i) {
    size_t index = 99;
    sl_loaded_tensor t;
    CHECK_OK(sl_loaded_find(loaded, want[i].name, want[i].len, &index));
    CHECK_OK(sl_loaded_get(loaded, index, &t));
    CHECK(t.bytes == want[i].size && memcmp(t.data, want[i].bytes, want[i].size) == 0);
  }
}

/* OpenPooled: single.safetensors, fresh options and a pool of `max_cached` bytes set on
 * them. Returns 1 when all three exist (failures are CHECKed). */
static int OpenPooled(uint64_t max_cached, sl_checkpoint** ck, sl_options** opt,
                      sl_host_pool** pool) {
  *ck = NULL;
  *opt = NULL;
  *pool = NULL;
  CHECK_OK(sl_checkpoint_open(Path("single.safetensors"), ck));
  CHECK_OK(sl_options_new(opt));
  CHECK_OK(sl_host_pool_new(max_cached, pool));
  if (*ck == NULL || *opt == NULL || *pool == NULL) return 0;
  CHECK(sl_host_pool_cached_bytes(*pool) == 0);
  CHECK_OK(sl_options_set_host_pool(*opt, *pool));
  return 1;
}

/* A second load through the pool reuses the first one's arena once it was freed, and
 * holds the file's bytes even though the first user scribbled over its tensors. */
static void TestHostPoolReuse(void) {
  sl_checkpoint* ck;
  sl_options* opt;
  sl_host_pool* pool;
  if (!OpenPooled(SL_HOST_POOL_DEFAULT_MAX_CACHED_BYTES, &ck, &opt, &pool)) return;
  CHECK_OK(sl_options_set_host_pool(opt, pool)); /* setting it again keeps one reference */
  size_t live_before = sl_live_arena_sets();

  sl_loaded* first = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &first, NULL));
  if (first == NULL) return;
  CheckSingleBytes(first);
  void* first_a = LoadedData(first, "a");
  CHECK(first_a != NULL);
  CHECK(sl_host_pool_cached_bytes(pool) == 0); /* lent out, not cached */
  /* Scribble over every tensor: the next user must not see it. */
  for (size_t i = 0; i < sl_loaded_count(first); ++i) {
    sl_loaded_tensor t;
    CHECK_OK(sl_loaded_get(first, i, &t));
    memset(t.data, 0xAB, t.bytes);
  }
  sl_loaded_free(first);
  CHECK(sl_live_arena_sets() == live_before);
  CHECK(sl_host_pool_cached_bytes(pool) == (2u << 20)); /* one 2 MiB-rounded mapping */
  CHECK(IsMapped(first_a) == 1);                         /* kept, not unmapped */

  sl_loaded* second = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &second, NULL));
  if (second == NULL) return;
  CHECK(LoadedData(second, "a") == first_a); /* the same memory */
  CHECK(sl_host_pool_cached_bytes(pool) == 0);
  CheckSingleBytes(second);

  /* Without the pool a load maps fresh memory and leaves the cache alone. */
  CHECK_OK(sl_options_set_host_pool(opt, NULL));
  sl_loaded* fresh = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &fresh, NULL));
  if (fresh != NULL) {
    CHECK(LoadedData(fresh, "a") != first_a);
    CheckSingleBytes(fresh);
  }
  sl_loaded_free(fresh);
  CHECK(sl_host_pool_cached_bytes(pool) == 0);

  sl_loaded_free(second);
  CHECK(sl_host_pool_cached_bytes(pool) == (2u << 20));
  CHECK_OK(sl_host_pool_trim(pool));
  CHECK(sl_host_pool_cached_bytes(pool) == 0);
  CHECK(IsMapped(first_a) == 0); /* trimmed: unmapped */
  CHECK(sl_live_arena_sets() == live_before);
  sl_host_pool_free(pool);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* The options hold a reference: the pool handle may be freed before them and the
 * options keep reusing memory. A pool smaller than two arenas keeps only one. */
static void TestHostPoolLifetimeAndLimit(void) {
  sl_checkpoint* ck;
  sl_options* opt;
  sl_host_pool* pool;
  if (!OpenPooled(2u << 20, &ck, &opt, &pool)) return; /* room for one arena */
  sl_loaded* a = NULL;
  sl_loaded* b = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &a, NULL));
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &b, NULL));
  if (a == NULL || b == NULL) return;
  void* pa = LoadedData(a, "a");
  void* pb = LoadedData(b, "a");
  CHECK(pa != pb);
  sl_loaded_free(a);
  CHECK(sl_host_pool_cached_bytes(pool) == (2u << 20));
  sl_loaded_free(b); /* evicts a's mapping (the oldest) to stay within 2 MiB */
  CHECK(sl_host_pool_cached_bytes(pool) == (2u << 20));
  CHECK(IsMapped(pa) == 0);
  CHECK(IsMapped(pb) == 1);

  sl_host_pool_free(pool); /* the options still hold the pool */
  sl_loaded* c = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &c, NULL));
  if (c != NULL) {
    CHECK(LoadedData(c, "a") == pb);
    CheckSingleBytes(c);
  }
  sl_loaded_free(c);
  CHECK(IsMapped(pb) == 1); /* back in the pool the options hold */
  sl_options_free(opt);      /* last reference: the cache is unmapped */
  CHECK(IsMapped(pb) == 0);

  /* max_cached_bytes 0 caches nothing. */
  sl_host_pool* none = NULL;
  CHECK_OK(sl_host_pool_new(0, &none));
  CHECK_OK(sl_options_new(&opt));
  if (none == NULL || opt == NULL) return;
  CHECK_OK(sl_options_set_host_pool(opt, none));
  sl_loaded* d = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &d, NULL));
  void* pd = d != NULL ? LoadedData(d, "a") : NULL;
  sl_loaded_free(d);
  CHECK(sl_host_pool_cached_bytes(none) == 0);
  CHECK(pd != NULL && IsMapped(pd) == 0);
  sl_host_pool_free(none);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* A DLPack export of a pooled load outlives the pool: its memory stays valid, and when
 * it is deleted the arena unmaps itself (the pool is gone) and nothing leaks. */
static void TestHostPoolOutlivedByExport(void) {
  sl_checkpoint* ck;
  sl_options* opt;
  sl_host_pool* pool;
  if (!OpenPooled(SL_HOST_POOL_DEFAULT_MAX_CACHED_BYTES, &ck, &opt, &pool)) return;
  size_t live_before = sl_live_arena_sets();
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  if (loaded == NULL) return;
  size_t ia = 99;
  CHECK_OK(sl_loaded_find(loaded, "a", 1, &ia));
  DLManagedTensor* da = NULL;
  CHECK_OK(sl_loaded_export_dlpack(loaded, ia, 0, &da));
  if (da == NULL) return;
  sl_loaded_free(loaded);
  CHECK(sl_host_pool_cached_bytes(pool) == 0); /* the export still holds the arena */
  sl_host_pool_free(pool);
  sl_options_free(opt); /* the pool itself is gone now */
  CHECK(sl_live_arena_sets() == live_before + 1);
  CHECK(memcmp(da->dl_tensor.data, g_a, sizeof g_a) == 0);
  void* data = da->dl_tensor.data;
  da->deleter(da);
  CHECK(sl_live_arena_sets() == live_before);
  CHECK(IsMapped(data) == 0); /* unmapped by the arena, not left in a dead pool */
  sl_checkpoint_free(ck);
}

/* PoolWorker: loads through the shared pool again and again, checking every byte. */
struct PoolWork {
  const sl_checkpoint* ck;
  const sl_options* opt;
  int failures;
};

static void* PoolWorker(void* arg) {
  struct PoolWork* w = (struct PoolWork*)arg;
  for (int i = 0; i < 25; ++i) {
    sl_loaded* loaded = NULL;
    if (sl_load_all(w->ck, w->opt, NULL, 0, &loaded, NULL) != SL_OK) {
      ++w->failures;
      continue;
    }
    void* a = LoadedData(loaded, "a");
    void* b = LoadedData(loaded, "b");
    if (a == NULL || b == NULL || memcmp(a, g_a, sizeof g_a) != 0 ||
        memcmp(b, g_b, sizeof g_b) != 0) {
      ++w->failures;
    }
    if (a != NULL) memset(a, 0xCD, sizeof g_a); /* dirty it for the next user */
    sl_loaded_free(loaded);
  }
  return NULL;
}

/* Four threads share one pool (and one sl_options): every load holds the file's bytes,
 * the cache stays within its limit, and every arena is accounted for at the end. */
static void TestHostPoolConcurrentLoads(void) {
  sl_checkpoint* ck;
  sl_options* opt;
  sl_host_pool* pool;
  if (!OpenPooled(4u << 20, &ck, &opt, &pool)) return; /* room for two of the four arenas */
  CHECK_OK(sl_options_set_threads(opt, 1));
  size_t live_before = sl_live_arena_sets();
  struct PoolWork work[4];
  pthread_t threads[4];
  int started[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4; ++i) {
    work[i].ck = ck;
    work[i].opt = opt;
    work[i].failures = 0;
    started[i] = pthread_create(&threads[i], NULL, PoolWorker, &work[i]) == 0;
    CHECK(started[i]);
  }
  for (int i = 0; i < 4; ++i) {
    if (started[i]) pthread_join(threads[i], NULL);
    CHECK(work[i].failures == 0);
  }
  CHECK(sl_live_arena_sets() == live_before);
  uint64_t cached = sl_host_pool_cached_bytes(pool);
  CHECK(cached >= (2u << 20) && cached <= (4u << 20));
  sl_host_pool_free(pool);
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

static void TestHostPoolNullArguments(void) {
  CHECK_ERR(sl_host_pool_new(1, NULL), SL_INVALID_ARGUMENT, "out is NULL");
  CHECK_ERR(sl_host_pool_trim(NULL), SL_INVALID_ARGUMENT, "pool is NULL");
  sl_host_pool* pool = NULL;
  CHECK_OK(sl_host_pool_new(1, &pool));
  CHECK_ERR(sl_options_set_host_pool(NULL, pool), SL_INVALID_ARGUMENT, "options is NULL");
  CHECK(sl_host_pool_cached_bytes(NULL) == 0);
  CHECK(sl_host_pool_cached_bytes(pool) == 0);
  CHECK_OK(sl_host_pool_trim(pool)); /* an empty pool trims to nothing */
  sl_host_pool_free(pool);
  sl_host_pool_free(NULL);
}

/* ---------------------------------------------------------------- saving flags, verify */

/* ReadHeaderText: the JSON header of a .safetensors file into buf ("" on failure). */
static void ReadHeaderText(const char* path, char* buf, size_t size) {
  buf[0] = '\0';
  FILE* f = fopen(path, "rb");
  if (f == NULL) return;
  uint64_t n = 0;
  if (fread(&n, 8, 1, f) == 1 && n < size) {
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
  }
  fclose(f);
}

/* StartsWith: whether s begins with prefix. */
static int StartsWith(const char* s, const char* prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* FlipByte: xor byte `offset` of the file with 0x01. */
static void FlipByte(const char* path, uint64_t offset) {
  FILE* f = fopen(path, "r+b");
  CHECK(f != NULL);
  if (f == NULL) return;
  CHECK(fseek(f, (long)offset, SEEK_SET) == 0);
  int c = fgetc(f);
  CHECK(c != EOF);
  CHECK(fseek(f, (long)offset, SEEK_SET) == 0);
  fputc(c ^ 0x01, f);
  fclose(f);
}

/* MetadataValue: the value of metadata `key` of an open checkpoint, or NULL. */
static const char* MetadataValue(const sl_checkpoint* ck, const char* key) {
  for (size_t i = 0; i < sl_checkpoint_metadata_count(ck); ++i) {
    const char *k = NULL, *v = NULL;
    if (sl_checkpoint_metadata(ck, i, &k, &v) == SL_OK && strcmp(k, key) == 0) return v;
  }
  return NULL;
}

/* IsHex16: 16 lowercase hex digits, as format/checksum.h writes an XXH3. */
static int IsHex16(const char* v) {
  if (v == NULL || strlen(v) != 16) return 0;
  for (int i = 0; i < 16; ++i) {
    if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f'))) return 0;
  }
  return 1;
}

/* save_model's tie notes in __metadata__ fill a target the file lacks, unless
 * sl_options_set_metadata_aliases(0) (what safetensors' load_model does). */
static void TestMetadataAliases(void) {
  float e[2] = {3, 4};
  uint64_t shape[1] = {2};
  sl_tensor_view t = {"embed", 5, "F32", shape, 1, e};
  const char* keys[1] = {"head"};
  const char* values[1] = {"embed"};
  CHECK_OK(sl_save_file(Path("tied.safetensors"), &t, 1, keys, values, 1));
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("tied.safetensors"), &ck));
  float embed[2] = {0}, head[2] = {0};
  sl_target targets[2] = {{"embed", 5, "F32", shape, 1, NULL, embed},
                          {"head", 4, "F32", shape, 1, NULL, head}};
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_load_into(ck, targets, 2, opt, NULL));
  CHECK(head[0] == 3 && head[1] == 4);
  CHECK_OK(sl_options_set_metadata_aliases(opt, 0));
  head[0] = head[1] = 0;
  CHECK_ERR(sl_load_into(ck, targets, 2, opt, NULL), SL_INVALID_ARGUMENT,
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"head\".");
  CHECK(head[0] == 0 && head[1] == 0);
  CHECK_OK(sl_options_set_metadata_aliases(opt, 1));
  CHECK_OK(sl_load_into(ck, targets, 2, opt, NULL));
  CHECK(head[0] == 3 && head[1] == 4);
  CHECK_ERR(sl_options_set_metadata_aliases(NULL, 0), SL_INVALID_ARGUMENT, "options is NULL");
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* HeaderLength: the 8-byte length prefix of a file (0 when it cannot be read). */
static uint64_t HeaderLength(const char* path) {
  uint64_t n = 0;
  FILE* f = fopen(path, "rb");
  if (f == NULL) return 0;
  if (fread(&n, 8, 1, f) != 1) n = 0;
  fclose(f);
  return n;
}

/* SL_SAVE_ALIGN_64 / SL_SAVE_ALIGN_4096: the data section on the boundary, the same
 * tensors read back; both at once is an error. */
static void TestSaveAlign(void) {
  float x[3] = {1, 2, 3};
  uint64_t shape[1] = {3};
  sl_tensor_view t[2] = {{"x", 1, "F32", shape, 1, x}, {"y", 1, "F32", shape, 1, x}};
  /* This name makes the reference layout end off a 64-byte boundary (8 + 64 = 72). */
  t[0].name = "xyzwvutsrq";
  t[0].name_len = 10;
  CHECK_OK(sl_save_file_ex(Path("plain.safetensors"), t, 1, NULL, NULL, 0, 0));
  CHECK(8 + HeaderLength(Path("plain.safetensors")) == 72);
  CHECK_OK(sl_save_file_ex(Path("a64.safetensors"), t, 1, NULL, NULL, 0, SL_SAVE_ALIGN_64));
  CHECK((8 + HeaderLength(Path("a64.safetensors"))) % 64 == 0);
  CHECK_OK(sl_save_file_ex(Path("a4k.safetensors"), t, 1, NULL, NULL, 0,
                           SL_SAVE_ALIGN_4096 | SL_SAVE_CHECKSUMS));
  CHECK(8 + HeaderLength(Path("a4k.safetensors")) == 4096);
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("a4k.safetensors"), &ck));
  if (ck != NULL) {
    sl_tensor_info info;
    CHECK_OK(sl_checkpoint_tensor(ck, 0, &info));
    CHECK(info.file_offset == 4096 && info.bytes == sizeof x);
    float back[3] = {0, 0, 0};
    CHECK_OK(sl_checkpoint_read(ck, 0, 0, sizeof back, back));
    CHECK(memcmp(back, x, sizeof x) == 0);
    sl_checkpoint_free(ck);
  }
  char dir[8300];
  snprintf(dir, sizeof dir, "%s", Path("aligned_shards"));
  CHECK(mkdir(dir, 0755) == 0);
  CHECK_OK(sl_save_sharded_ex(dir, t, 2, "12B", NULL, NULL, NULL, 0, SL_SAVE_ALIGN_4096));
  char shard[8400];
  for (int k = 1; k <= 2; ++k) {
    snprintf(shard, sizeof shard, "%s/model-0000%d-of-00002.safetensors", dir, k);
    CHECK(8 + HeaderLength(shard) == 4096);
  }
  CHECK_ERR(sl_save_file_ex(Path("both.safetensors"), t, 1, NULL, NULL, 0,
                            SL_SAVE_ALIGN_64 | SL_SAVE_ALIGN_4096),
            SL_INVALID_ARGUMENT, "SL_SAVE_ALIGN_64 and SL_SAVE_ALIGN_4096 are exclusive");
  CHECK_ERR(sl_save_sharded_ex(dir, t, 2, NULL, NULL, NULL, NULL, 0,
                               SL_SAVE_ALIGN_64 | SL_SAVE_ALIGN_4096),
            SL_INVALID_ARGUMENT, "SL_SAVE_ALIGN_64 and SL_SAVE_ALIGN_4096 are exclusive");
}

static void TestSaveFlags(void) {
  float x[2] = {1, 2};
  uint64_t shape[1] = {2};
  sl_tensor_view t = {"x", 1, "F32", shape, 1, x};
  char header[4096];
  /* SL_SAVE_EMPTY_METADATA with no entries: "__metadata__":{} (safetensors' metadata={}). */
  CHECK_OK(sl_save_file_ex(Path("empty_md.safetensors"), &t, 1, NULL, NULL, 0,
                           SL_SAVE_EMPTY_METADATA));
  ReadHeaderText(Path("empty_md.safetensors"), header, sizeof header);
  CHECK(StartsWith(header, "{\"__metadata__\":{},\"x\":{\"dtype\":\"F32\",\"shape\":[2],"
                          "\"data_offsets\":[0,8]}}"));
  /* ... which a reader tells from none: */
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("empty_md.safetensors"), &ck));
  CHECK(sl_checkpoint_metadata_count(ck) == 0 && sl_checkpoint_has_metadata(ck) == 1);
  sl_checkpoint_free(ck);
  CHECK(sl_checkpoint_has_metadata(NULL) == 0);
  /* Without the flag (and through sl_save_file): no __metadata__ at all. */
  CHECK_OK(sl_save_file_ex(Path("no_md.safetensors"), &t, 1, NULL, NULL, 0, 0));
  ReadHeaderText(Path("no_md.safetensors"), header, sizeof header);
  CHECK(StartsWith(header, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"));
  ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("no_md.safetensors"), &ck));
  CHECK(sl_checkpoint_metadata_count(ck) == 0 && sl_checkpoint_has_metadata(ck) == 0);
  sl_checkpoint_free(ck);
  /* Entries: the flag changes nothing. */
  const char* keys[2] = {"b", "a"};
  const char* values[2] = {"2", "1"};
  CHECK_OK(sl_save_file_ex(Path("md.safetensors"), &t, 1, keys, values, 2,
                           SL_SAVE_EMPTY_METADATA));
  ReadHeaderText(Path("md.safetensors"), header, sizeof header);
  CHECK(StartsWith(header, "{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"},\"x\":{"));
  CHECK_ERR(sl_save_file_ex(Path("f.safetensors"), &t, 1, NULL, NULL, 0, 16),
            SL_INVALID_ARGUMENT, "unknown save flags 16");
  CHECK_ERR(sl_save_sharded_ex(g_dir, &t, 1, NULL, "flags", NULL, NULL, 0,
                               SL_SAVE_EMPTY_METADATA),
            SL_INVALID_ARGUMENT, "unknown save flags 1");
  char expect[8300];
  snprintf(expect, sizeof expect, "%s: metadata entry 0 is NULL", Path("n.safetensors"));
  const char* null_key[1] = {NULL};
  CHECK_ERR(sl_save_file_ex(Path("n.safetensors"), &t, 1, null_key, values, 1, 0),
            SL_INVALID_ARGUMENT, expect);
  const char* twice[2] = {"k", "k"};
  snprintf(expect, sizeof expect, "%s: metadata key 'k' appears twice", Path("n.safetensors"));
  CHECK_ERR(sl_save_file_ex(Path("n.safetensors"), &t, 1, twice, values, 2, 0),
            SL_INVALID_ARGUMENT, expect);
  snprintf(expect, sizeof expect, "%s: metadata key 'k' appears twice", g_dir);
  CHECK_ERR(sl_save_sharded_ex(g_dir, &t, 1, NULL, "twice", twice, values, 2, 0),
            SL_INVALID_ARGUMENT, expect);
  struct stat st;
  CHECK(stat(Path("n.safetensors"), &st) != 0);
  CHECK(stat(Path("twice.safetensors"), &st) != 0);
}

/* Checksums written with SL_SAVE_CHECKSUMS, checked by loads with verify on. */
static void TestVerifySingleFile(void) {
  const char* keys[1] = {"format"};
  const char* values[1] = {"pt"};
  sl_tensor_view t[2] = {
      {"a", 1, "F32", kShapeA, 2, g_a},
      {"b", 1, "I64", kShapeB, 1, g_b},
  };
  const char* path = Path("verify.safetensors");
  char file[8192];
  snprintf(file, sizeof file, "%s", path);
  CHECK_OK(sl_save_file_ex(file, t, 2, keys, values, 1, SL_SAVE_CHECKSUMS));
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_ERR(sl_options_set_verify(NULL, 1), SL_INVALID_ARGUMENT, "options is NULL");
  CHECK_OK(sl_options_set_verify(opt, 1));

  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(file, &ck));
  if (ck == NULL) return;
  CHECK(sl_checkpoint_metadata_count(ck) == 3);
  /* Both tensors have a record; a file saved without checksums has none. */
  size_t recorded = 99;
  CHECK_OK(sl_checkpoint_recorded_hash_count(ck, &recorded));
  CHECK(recorded == 2);
  CHECK_ERR(sl_checkpoint_recorded_hash_count(NULL, &recorded), SL_INVALID_ARGUMENT,
            "checkpoint is NULL");
  CHECK_ERR(sl_checkpoint_recorded_hash_count(ck, NULL), SL_INVALID_ARGUMENT, "count is NULL");
  {
    sl_checkpoint* plain = NULL;
    CHECK_OK(sl_save_file_ex(Path("verify_plain.safetensors"), t, 2, NULL, NULL, 0, 0));
    CHECK_OK(sl_checkpoint_open(Path("verify_plain.safetensors"), &plain));
    recorded = 99;
    CHECK_OK(sl_checkpoint_recorded_hash_count(plain, &recorded));
    CHECK(recorded == 0);
    sl_checkpoint_free(plain);
    /* A malformed record: the verifying load's error. */
    const char* bad_keys[1] = {"shardload.xxh3.a"};
    const char* bad_values[1] = {"xyz"};
    CHECK_OK(sl_save_file_ex(Path("verify_bad.safetensors"), t, 2, bad_keys, bad_values, 1, 0));
    CHECK_OK(sl_checkpoint_open(Path("verify_bad.safetensors"), &plain));
    CHECK_ERR(sl_checkpoint_recorded_hash_count(plain, &recorded), SL_DATA_LOSS,
              "verify_bad.safetensors: __metadata__ key 'shardload.xxh3.a': 'xyz' is not a "
              "16-digit hex XXH3 value");
    sl_checkpoint_free(plain);
  }
  CHECK(MetadataValue(ck, "format") != NULL && strcmp(MetadataValue(ck, "format"), "pt") == 0);
  CHECK(IsHex16(MetadataValue(ck, "shardload.xxh3.a")));
  char recorded_b[17] = {0};
  CHECK(IsHex16(MetadataValue(ck, "shardload.xxh3.b")));
  if (IsHex16(MetadataValue(ck, "shardload.xxh3.b"))) {
    memcpy(recorded_b, MetadataValue(ck, "shardload.xxh3.b"), 16);
  }
  sl_tensor_info info_b;
  CHECK_OK(sl_checkpoint_tensor(ck, 1, &info_b));
  uint64_t b_offset = info_b.file_offset;
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  CHECK(sl_loaded_count(loaded) == 2);
  sl_loaded_free(loaded);
  sl_checkpoint_free(ck);

  /* Flip the low bit of b[0]; the XXH3 of the changed bytes is what a checksummed save
   * of those bytes records. */
  FlipByte(file, b_offset);
  int64_t flipped[4] = {g_b[0] ^ 1, g_b[1], g_b[2], g_b[3]};
  sl_tensor_view fb = {"b", 1, "I64", kShapeB, 1, flipped};
  CHECK_OK(sl_save_file_ex(Path("flipped_b.safetensors"), &fb, 1, NULL, NULL, 0,
                           SL_SAVE_CHECKSUMS));
  char actual_b[17] = {0};
  sl_checkpoint* fck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("flipped_b.safetensors"), &fck));
  if (fck != NULL && IsHex16(MetadataValue(fck, "shardload.xxh3.b"))) {
    memcpy(actual_b, MetadataValue(fck, "shardload.xxh3.b"), 16);
  }
  sl_checkpoint_free(fck);
  CHECK(strcmp(actual_b, recorded_b) != 0);

  /* The message names the file by its name in the checkpoint's folder. */
  char expect[256];
  snprintf(expect, sizeof expect,
           "verify.safetensors: tensor 'b' at bytes [%llu, %llu): XXH3 of its 32 bytes is %s, "
           "recorded %s", (unsigned long long)b_offset, (unsigned long long)(b_offset + 32),
           actual_b, recorded_b);
  CHECK_OK(sl_checkpoint_open(file, &ck));
  if (ck == NULL) return;
  loaded = (sl_loaded*)0x1;
  CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_DATA_LOSS, expect);
  CHECK(loaded == NULL);
  /* sl_load_into reports it the same way. */
  float ra[6];
  int64_t rb[4];
  sl_target targets[2] = {
      {"a", 1, "F32", kShapeA, 2, NULL, ra},
      {"b", 1, "I64", kShapeB, 1, NULL, rb},
  };
  CHECK_ERR(sl_load_into(ck, targets, 2, opt, NULL), SL_DATA_LOSS, expect);
  /* Only the loaded tensors are checked: a alone loads. */
  CHECK_OK(sl_options_set_strict(opt, 0));
  CHECK_OK(sl_load_into(ck, targets, 1, opt, NULL));
  CHECK(memcmp(ra, g_a, sizeof ra) == 0);
  /* Without verify the changed byte goes through unnoticed: verify is what caught it. */
  CHECK_OK(sl_options_set_verify(opt, 0));
  CHECK_OK(sl_load_into(ck, targets, 2, opt, NULL));
  CHECK(rb[0] == (g_b[0] ^ 1) && rb[3] == g_b[3]);
  /* verify with every io mode. */
  CHECK_OK(sl_options_set_verify(opt, 1));
  const char* modes[3] = {"pread", "mmap", "auto"};
  for (int m = 0; m < 3; ++m) {
    CHECK_OK(sl_options_set_io(opt, modes[m]));
    CHECK_ERR(sl_load_into(ck, targets, 2, opt, NULL), SL_DATA_LOSS, expect);
  }
  sl_options_free(opt);
  sl_checkpoint_free(ck);
}

/* Sharded: each shard records its own tensors, the index all of them. */
static void TestVerifySharded(void) {
  mkdir(Path("vsharded"), 0755);
  float w[3][64];
  for (int i = 0; i < 64; ++i) {
    w[0][i] = (float)i;
    w[1][i] = (float)(2 * i);
    w[2][i] = (float)(3 * i);
  }
  uint64_t shape[1] = {64};
  sl_tensor_view t[3] = {
      {"l0", 2, "F32", shape, 1, w[0]},
      {"l1", 2, "F32", shape, 1, w[1]},
      {"l2", 2, "F32", shape, 1, w[2]},
  };
  const char* keys[1] = {"note"};
  const char* values[1] = {"v"};
  CHECK_OK(sl_save_sharded_ex(Path("vsharded"), t, 3, "256B", NULL, keys, values, 1,
                              SL_SAVE_CHECKSUMS));
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("vsharded"), &ck));
  if (ck == NULL) return;
  CHECK(sl_checkpoint_shard_count(ck) == 3);
  /* Index metadata: note, total_size and the three hashes. */
  CHECK(sl_checkpoint_metadata_count(ck) == 5);
  CHECK(MetadataValue(ck, "note") != NULL && strcmp(MetadataValue(ck, "note"), "v") == 0);
  CHECK(IsHex16(MetadataValue(ck, "shardload.xxh3.l0")));
  char recorded_l2[17] = {0};
  if (IsHex16(MetadataValue(ck, "shardload.xxh3.l2"))) {
    memcpy(recorded_l2, MetadataValue(ck, "shardload.xxh3.l2"), 16);
  }
  CHECK(recorded_l2[0] != '\0');
  /* The third shard alone: {"format": "pt"} and its own tensor's hash, the same value. */
  sl_checkpoint* shard = NULL;
  CHECK_OK(sl_checkpoint_open(Path("vsharded/model-00003-of-00003.safetensors"), &shard));
  if (shard != NULL) {
    CHECK(sl_checkpoint_metadata_count(shard) == 2);
    CHECK(MetadataValue(shard, "format") && strcmp(MetadataValue(shard, "format"), "pt") == 0);
    CHECK(MetadataValue(shard, "shardload.xxh3.l2") &&
          strcmp(MetadataValue(shard, "shardload.xxh3.l2"), recorded_l2) == 0);
    CHECK(MetadataValue(shard, "note") == NULL);
    sl_checkpoint_free(shard);
  }
  sl_options* opt = NULL;
  CHECK_OK(sl_options_new(&opt));
  CHECK_OK(sl_options_set_verify(opt, 1));
  sl_loaded* loaded = NULL;
  CHECK_OK(sl_load_all(ck, opt, NULL, 0, &loaded, NULL));
  CHECK(sl_loaded_count(loaded) == 3);
  sl_loaded_free(loaded);
  sl_tensor_info info;
  CHECK_OK(sl_checkpoint_tensor(ck, 2, &info));
  sl_checkpoint_free(ck);

  FlipByte(Path("vsharded/model-00003-of-00003.safetensors"), info.file_offset + 4);
  /* w[2][1] (3.0f) with the low bit of its first (little-endian) byte flipped. */
  uint32_t bits;
  memcpy(&bits, &w[2][1], 4);
  bits ^= 1;
  memcpy(&w[2][1], &bits, 4);
  CHECK_OK(sl_save_file_ex(Path("flipped_l2.safetensors"), &t[2], 1, NULL, NULL, 0,
                           SL_SAVE_CHECKSUMS));
  char actual_l2[17] = {0};
  sl_checkpoint* fck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("flipped_l2.safetensors"), &fck));
  if (fck != NULL && IsHex16(MetadataValue(fck, "shardload.xxh3.l2"))) {
    memcpy(actual_l2, MetadataValue(fck, "shardload.xxh3.l2"), 16);
  }
  sl_checkpoint_free(fck);
  char expect[8500];
  snprintf(expect, sizeof expect,
           "model-00003-of-00003.safetensors: tensor 'l2' at bytes [%llu, %llu): XXH3 of its 256 "
           "bytes is %s, recorded %s", (unsigned long long)info.file_offset,
           (unsigned long long)(info.file_offset + 256), actual_l2, recorded_l2);
  CHECK_OK(sl_checkpoint_open(Path("vsharded"), &ck));
  if (ck != NULL) {
    loaded = (sl_loaded*)0x1;
    CHECK_ERR(sl_load_all(ck, opt, NULL, 0, &loaded, NULL), SL_DATA_LOSS, expect);
    CHECK(loaded == NULL);
    CHECK(sl_live_arena_sets() == 0);
    sl_checkpoint_free(ck);
  }
  sl_options_free(opt);
}

/* Metadata keys and values holding NUL ("\u0000" in the JSON): sl_checkpoint_metadata_n
 * gives them whole, with their lengths; the NUL-terminated form ends at the NUL. */
static void TestMetadataWithNul(void) {
  const char header[] =
      "{\"__metadata__\":{\"a\\u0000b\":\"x\\u0000y\",\"a\\u0000c\":\"2\"},"
      "\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  FILE* f = fopen(Path("nul_meta.safetensors"), "wb");
  CHECK(f != NULL);
  if (f == NULL) return;
  uint64_t n = sizeof header - 1;
  fwrite(&n, 8, 1, f);
  fwrite(header, 1, n, f);
  fwrite("\x07", 1, 1, f);
  fclose(f);
  sl_checkpoint* ck = NULL;
  CHECK_OK(sl_checkpoint_open(Path("nul_meta.safetensors"), &ck));
  if (ck == NULL) return;
  CHECK(sl_checkpoint_metadata_count(ck) == 2);
  const char *k = NULL, *v = NULL;
  size_t kn = 0, vn = 0;
  CHECK_OK(sl_checkpoint_metadata_n(ck, 0, &k, &kn, &v, &vn));
  CHECK(kn == 3 && memcmp(k, "a\0b", 3) == 0 && vn == 3 && memcmp(v, "x\0y", 3) == 0);
  CHECK_OK(sl_checkpoint_metadata_n(ck, 1, &k, &kn, &v, &vn));
  CHECK(kn == 3 && memcmp(k, "a\0c", 3) == 0 && vn == 1 && memcmp(v, "2", 1) == 0);
  CHECK_OK(sl_checkpoint_metadata_n(ck, 1, NULL, NULL, NULL, &vn));
  CHECK(vn == 1);
  CHECK_ERR(sl_checkpoint_metadata_n(ck, 2, &k, &kn, &v, &vn), SL_OUT_OF_RANGE,
            "metadata index 2 is out of range (2 entries)");
  CHECK_ERR(sl_checkpoint_metadata_n(NULL, 0, &k, &kn, &v, &vn), SL_INVALID_ARGUMENT,
            "checkpoint is NULL");
  sl_checkpoint_free(ck);
}

int main(int argc, char** argv) {
  g_fake_cuda = argc > 1 && strcmp(argv[1], "--fake-cuda") == 0;
  const char* tmp = getenv("TEST_TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/capi_test", tmp != NULL ? tmp : "/tmp");
  mkdir(g_dir, 0755);
  WriteSingle();
  RunCase("VersionAndNames", TestVersionAndNames);
  RunCase("OpenAndList", TestOpenAndList);
  RunCase("OpenErrors", TestOpenErrors);
  RunCase("LoadAllAndDlpack", TestLoadAllAndDlpack);
  RunCase("LoadIntoStrictFailure", TestLoadIntoStrictFailure);
  RunCase("LoadIntoNonStrictAndCast", TestLoadIntoNonStrictAndCast);
  RunCase("ShardedRenamesAndAliases", TestShardedRenamesAndAliases);
  RunCase("LoadAllWithTargets", TestLoadAllWithTargets);
  RunCase("ProgressAndCancel", TestProgressAndCancel);
  RunCase("OptionErrors", TestOptionErrors);
  RunCase("PageableStagingWarns", TestPageableStagingWarns);
  RunCase("HostPlacement", TestHostPlacement);
  RunCase("FreeNullAndWriteErrors", TestFreeNullAndWriteErrors);
  RunCase("DeviceMapOnHost", TestDeviceMapOnHost);
  RunCase("CancelToken", TestCancelToken);
  RunCase("CheckpointWarnings", TestCheckpointWarnings);
  RunCase("FailedLoadReportsAndZeroBytes", TestFailedLoadReportsAndZeroBytes);
  RunCase("ReadsKeepTheirFiles", TestReadsKeepTheirFiles);
  RunCase("KeptFilesAreBounded", TestKeptFilesAreBounded);
  RunCase("KeptFilesAreOfOneSave", TestKeptFilesAreOfOneSave);
  RunCase("LenientIndex", TestLenientIndex);
  RunCase("CancelWhileWaitingForTheFolderLock", TestCancelWhileWaitingForTheFolderLock);
  RunCase("ASingleFileIgnoresTheFolderLock", TestASingleFileIgnoresTheFolderLock);
  RunCase("DlpackHugeDimsAndNullNames", TestDlpackHugeDimsAndNullNames);
  RunCase("MetadataWithNul", TestMetadataWithNul);
  RunCase("SaveFlags", TestSaveFlags);
  RunCase("SaveAlign", TestSaveAlign);
  RunCase("VerifySingleFile", TestVerifySingleFile);
  RunCase("VerifySharded", TestVerifySharded);
  RunCase("MetadataAliases", TestMetadataAliases);
  RunCase("HostPoolReuse", TestHostPoolReuse);
  RunCase("HostPoolLifetimeAndLimit", TestHostPoolLifetimeAndLimit);
  RunCase("HostPoolOutlivedByExport", TestHostPoolOutlivedByExport);
  RunCase("HostPoolConcurrentLoads", TestHostPoolConcurrentLoads);
  RunCase("HostPoolNullArguments", TestHostPoolNullArguments);
  const char* xml = getenv("XML_OUTPUT_FILE");
  FILE* x = xml != NULL ? fopen(xml, "w") : NULL;
  if (x != NULL) {
    fprintf(x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n"
               "<testsuite name=\"capi_test\" tests=\"%d\" failures=\"%d\">\n",
            g_case_count, g_cases_failed);
    for (int i = 0; i < g_case_count; ++i) {
      fprintf(x, "<testcase name=\"%s\" classname=\"capi_test\">%s</testcase>\n",
              g_case_names[i], g_case_ok[i] ? "" : "<failure message=\"see log\"/>");
    }
    fprintf(x, "</testsuite>\n</testsuites>\n");
    fclose(x);
  }
  printf("%d checks, %d failed\n", g_checks, g_failed);
  printf("%d passed, %d failed\n", g_cases_passed, g_cases_failed);
  return g_cases_failed == 0 ? 0 : 1;
}
