// The test runner: doctest's own main. `make test` runs every case; pass doctest flags through
// TEST_ARGS, e.g. `make test TEST_ARGS='-tc=*matmul*'`.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
