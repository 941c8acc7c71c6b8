// fuzz/write_seeds.cc — `write_seeds DIR`: write the malformed-input corpus
// (tests/malformed_corpus.h, without its multi-megabyte scale cases) into DIR, as
// starting inputs for the header and checkpoint fuzz targets.
#include <iostream>

#include "tests/malformed_corpus.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: write_seeds DIR (the folder must exist)\n";
    return 2;
  }
  shardload::Status s =
      shardload::testing::WriteMalformedCorpus(argv[1], {.include_large = false});
  if (!s.ok()) {
    std::cerr << "write_seeds: " << s.ToString() << "\n";
    return 1;
  }
  return 0;
}
