# Ember's build. `make` builds build/libember.a and the examples; `make test` builds and runs the
# doctest suite; `make asan` runs it under AddressSanitizer and UBSan; `make bench` prints speeds;
# `make fuzz` fuzzes the safetensors reader for a minute (clang, libFuzzer).
#
# CUDA: a build with nvcc on the PATH compiles tensor/cuda/*.cu and links cuBLAS and cuRAND;
# `make CUDA=0` forces a CPU-only build (the CUDA ops then throw "built without CUDA").

CXX        ?= g++
NVCC       ?= nvcc
CUDA_ARCH  ?= sm_90
# x86-64-v3 (AVX2, FMA) rather than -march=native: GCC 12 miscompiles some small constant
# arrays under AVX-512, and a library built for v3 runs on any x86 machine from the last decade.
ARCH_FLAGS ?= $(if $(filter x86_64,$(shell uname -m)),-march=x86-64-v3,)
OPT        ?= -O3
BUILD      ?= build

HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1 || echo 0)
HAVE_CUDA_SOURCES := $(if $(wildcard tensor/cuda/*.cu),1,0)
CUDA ?= $(if $(filter 11,$(HAVE_NVCC)$(HAVE_CUDA_SOURCES)),1,0)

CXXFLAGS := -std=c++17 $(OPT) -g -Wall -Wextra -Werror -I. -pthread -MMD -MP $(ARCH_FLAGS) $(EXTRA_FLAGS)
ZLIB     ?= -lz
LDLIBS   := -pthread $(ZLIB)

LIB_DIRS := tensor tensor/cpu autograd nn peft models
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.cpp))
ifeq ($(CUDA),1)
  CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC))))
  CXXFLAGS  += -DEMBER_WITH_CUDA -I$(CUDA_HOME)/include
  # -Xcompiler passes the warning flags to the host compiler (nvcc 13 accepts them as written).
  # -lineinfo maps compute-sanitizer's reports to source lines; it leaves the machine code alone.
  NVCCFLAGS := -std=c++17 -O3 -arch=$(CUDA_ARCH) -lineinfo -I. -DEMBER_WITH_CUDA -MMD -MP \
               -Xcompiler "-Wall -Wextra -Werror" $(EXTRA_NVCC_FLAGS)
  LDLIBS    += -L$(CUDA_HOME)/lib64 -lcublas -lcurand -lcudart
  CU_SRCS   := $(wildcard tensor/cuda/*.cu)
else
  LIB_SRCS  += tensor/cuda/no_cuda.cpp
  CU_SRCS   :=
endif

LIB_OBJS  := $(LIB_SRCS:%.cpp=$(BUILD)/%.o) $(CU_SRCS:%.cu=$(BUILD)/%.cu.o)

# Three files are compiled for AVX-512 on x86-64, each chosen at run time when the CPU has it:
# the f32 GEMM (tensor/cpu/matmul.cpp), the 4-bit and the bf16 products; everything else keeps the
# portable ARCH_FLAGS.
ifeq ($(shell uname -m),x86_64)
$(BUILD)/tensor/cpu/matmul_avx512.o: CXXFLAGS += -mavx512f -mavx512vl -mprefer-vector-width=512 \
                                                -DEMBER_HAVE_AVX512_GEMM
# The 4-bit products likewise (tensor/cpu/quant_avx512.cpp), behind the same run-time check.
$(BUILD)/tensor/cpu/quant_avx512.o: CXXFLAGS += -mavx512f -mavx512vl -mprefer-vector-width=512
# The bf16 products (tensor/cpu/bf16_gemm.cpp) need AVX-512 BF16's vdpbf16ps, checked at run time.
$(BUILD)/tensor/cpu/bf16_gemm.o: CXXFLAGS += -mavx512f -mavx512vl -mavx512bw -mavx512bf16 \
                                             -mprefer-vector-width=512 -DEMBER_HAVE_AVX512_BF16
endif
# The CPU kernels never read errno or the floating-point exception flags, so sqrt and friends
# may vectorize (AdamW, norms), and so may floor and the clamps of the f32 exp in GELU and SiLU
# (with trapping math on, GCC keeps those loops scalar: 8% of a GPT-2 LoRA step). Neither flag
# changes a computed value.
$(patsubst %.cpp,$(BUILD)/%.o,$(wildcard tensor/cpu/*.cpp)): CXXFLAGS += -fno-math-errno -fno-trapping-math
LIB       := $(BUILD)/libember.a
EXAMPLE_SUPPORT := $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard examples/support/*.cpp))
EXAMPLES  := $(patsubst examples/%.cpp,$(BUILD)/%,$(wildcard examples/*.cpp))
TEST_SRCS := $(wildcard tests/*.cpp)
TEST_OBJS := $(TEST_SRCS:%.cpp=$(BUILD)/%.o)
TEST_BIN  := $(BUILD)/ember_tests
BENCH_BIN := $(BUILD)/bench_ops

.PHONY: all lib examples test asan bench deps demo peft-results longctx clean fuzz gpu-check gpu-bin install embed-check
all: lib examples

lib: $(LIB)

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

# ---- examples: build/gpt, build/vit ----
examples: $(EXAMPLES)

$(EXAMPLES): $(BUILD)/%: $(BUILD)/examples/%.o $(EXAMPLE_SUPPORT) $(LIB)
	$(CXX) $(CXXFLAGS) $< $(EXAMPLE_SUPPORT) $(LIB) $(LDLIBS) -o $@

$(EXAMPLE_SUPPORT) $(EXAMPLES:$(BUILD)/%=$(BUILD)/examples/%.o): | deps

# The README's main command: train a small GPT and a small ViT (installs the data packages).
demo: deps
	@scripts/apt_install.sh $(call missing_pkgs,$(DATA_DEPS))
	$(MAKE) -j$$(nproc) examples
	scripts/demo.sh $(BUILD)

# The PEFT results table (docs/PEFT-RESULTS.md): every method against full fine-tuning.
peft-results: deps
	@scripts/apt_install.sh $(call missing_pkgs,$(DATA_DEPS))
	$(MAKE) -j$$(nproc) examples
	scripts/peft_results.sh $(BUILD)

# LongLoRA's context-extension example: a small LLaMA-style GPT trained at context 256 on the
# King James Bible (bible-kjv-text, dumped by the bible-kjv program), extended to 1024 by linear
# interpolation and by YaRN (~12 min).
LONGCTX_DEPS := /usr/lib/bible.data:bible-kjv-text /usr/bin/bible:bible-kjv
longctx: deps
	@scripts/apt_install.sh $(call missing_pkgs,$(LONGCTX_DEPS))
	$(MAKE) $(BUILD)/longctx
	scripts/longctx.sh $(BUILD) $(LONGCTX_ARGS)

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# ---- dependencies: Debian packages, installed with apt-get when run as root ----
# header-or-file:package pairs; `make deps` installs whatever is missing.
BUILD_DEPS := /usr/include/doctest/doctest.h:doctest-dev \
              /usr/include/nlohmann/json.hpp:nlohmann-json3-dev \
              /usr/include/zlib.h:zlib1g-dev \
              /usr/bin/pkg-config:pkg-config
DATA_DEPS  := /usr/share/games/fortunes/fortunes.dat:fortunes \
              /usr/share/datasets/fashion-mnist:dataset-fashion-mnist \
              /usr/bin/gnuplot:gnuplot-nox
missing_pkgs = $(foreach d,$(1),$(if $(wildcard $(firstword $(subst :, ,$(d)))),,$(lastword $(subst :, ,$(d)))))

deps:
	@scripts/apt_install.sh $(call missing_pkgs,$(BUILD_DEPS))

$(LIB_OBJS) $(TEST_OBJS): | deps

# The test files are orchestration: the library they link does the arithmetic, at $(OPT). Built
# without optimisation they compile in half the time (a large test file: 16 s at -O3, 8 s at
# -O0), for a suite that runs in 10.8 s instead of 7.4 s (the naive reference products are most
# of the difference; 2026-12-07). CI builds the suite twice, so this saves minutes there. The
# last -O on a command line is the one GCC uses.
$(TEST_OBJS): CXXFLAGS += -O0

# Objects built with CUDA=1 must not be linked into a CUDA=0 build or the other way round (the
# front-ends compile their CUDA branch only with EMBER_WITH_CUDA). A stamp per setting makes a
# switch in the same build folder rebuild everything.
CONFIG_STAMP := $(BUILD)/.config-cuda$(CUDA)
$(CONFIG_STAMP):
	@mkdir -p $(BUILD)
	@rm -f $(BUILD)/.config-cuda*
	@touch $@
$(LIB_OBJS) $(TEST_OBJS): $(CONFIG_STAMP)

$(TEST_BIN): $(TEST_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) $(TEST_OBJS) $(LIB) $(LDLIBS) -o $@

# `make test` builds in parallel, runs the doctest suite, then (without TEST_ARGS) the scripted
# CLI tests of build/gpt and build/vit and the embedding check below.
CLI_TESTS ?= 1
test: deps
	$(MAKE) -j$$(nproc) $(TEST_BIN) $(if $(filter 1,$(CLI_TESTS)),examples)
	./$(TEST_BIN) $(TEST_ARGS)
ifeq ($(CLI_TESTS),1)
	$(if $(TEST_ARGS),,tests/cli/cli_test.sh $(BUILD))
	$(if $(TEST_ARGS),,$(MAKE) --no-print-directory embed-check)
endif

# ---- installing for embedders: headers, libember.a and ember.pc ----
# `make install PREFIX=/opt/ember` (DESTDIR works too). Consumers compile with
# `pkg-config --cflags --libs ember`: the include path, -std=c++17 and the libraries, none of the
# warning or architecture flags Ember itself is built with.
PREFIX ?= /usr/local
PC_LIBS := -L$${libdir} -lember $(LDLIBS)
INSTALL_HEADERS := $(foreach d,$(LIB_DIRS) tensor/cuda,$(wildcard $(d)/*.h))
install: lib
	@mkdir -p $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/ember
	for h in $(INSTALL_HEADERS); do install -D -m 644 $$h $(DESTDIR)$(PREFIX)/include/ember/$$h || exit 1; done
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libember.a
	printf '%s\n' 'prefix=$(PREFIX)' 'includedir=$${prefix}/include/ember' 'libdir=$${prefix}/lib' '' \
	  'Name: ember' 'Description: a C++17/CUDA tensor engine with autograd, transformers and PEFT' \
	  'Version: 0.1.0' 'Cflags: -I$${includedir} -std=c++17 -pthread' 'Libs: $(PC_LIBS)' \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ember.pc

# examples/embed built against a fresh install in a temporary prefix, as an embedder would.
embed-check:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf '$$tmp EXIT; \
	$(MAKE) --no-print-directory install PREFIX=$$tmp/prefix > $$tmp/install.log; \
	export PKG_CONFIG_PATH=$$tmp/prefix/lib/pkgconfig; \
	$(CXX) examples/embed/main.cpp $$(pkg-config --cflags --libs ember) -o $$tmp/embed; \
	mkdir $$tmp/model && $$tmp/embed $$tmp/model

# The suite under AddressSanitizer and UBSan, in its own build folder, CPU-only. -g1 keeps the
# line tables a report's stack trace needs and drops the rest of the debug information: a
# quarter of this build's compile time.
asan:
	$(MAKE) CUDA=0 BUILD=build-asan OPT=-O1 CLI_TESTS=0 \
	  EXTRA_FLAGS="-g1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDLIBS="-pthread -lz -fsanitize=address,undefined" test

# ---- fuzzing (not part of `make test`) ----
# Five parsers under libFuzzer + ASan + UBSan: clang, their own build folder, FUZZ_SECONDS each,
# one after another, from the seed files in fuzz/corpus/<target>/ (new inputs they find go to
# build-fuzz/corpus/<target>/, not into git):
#   safetensors      the safetensors reader
#   model_config     GPT-2 / LLaMA / ViT config.json
#   adapter_config   adapter_config.json of every PEFT method
#   idx              IDX images and labels
#   tokenizer        GPT-2's vocab.json + merges.txt
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := safetensors model_config adapter_config idx tokenizer
FUZZ_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
fuzz:
	$(MAKE) CUDA=0 CXX=clang++ BUILD=build-fuzz OPT=-O1 \
	  EXTRA_FLAGS="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; \
	  ./build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -print_final_stats=1 \
	    $$(test -f fuzz/$$t.dict && echo -dict=fuzz/$$t.dict) build-fuzz/corpus/$$t fuzz/corpus/$$t \
	    > build-fuzz/fuzz_$$t.log 2>&1 || { tail -40 build-fuzz/fuzz_$$t.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|DONE' build-fuzz/fuzz_$$t.log; \
	done

$(BUILD)/fuzz_%: fuzz/fuzz_%.cpp $(LIB)
	$(CXX) $(CXXFLAGS) -fsanitize=fuzzer $< $(LIB) $(LDLIBS) -fsanitize=fuzzer,address,undefined -o $@

# ---- the GPU window (scripts/gpu_window.sh; DEVELOPERS.md, "The GPU") ----
# `make gpu-check`: every CUDA case, bench_gpu, GPT-2 small training and the four compute-sanitizer
# tools, each under a timeout, with a one-line-per-step summary. Without a GPU it marks each step
# skipped and ends at once. `make gpu-bin` builds, here, the stripped binaries it runs (gpu-bin/,
# ignored by git, carried to the device machine), with the headers a rebuild there would need.
GPU_BIN ?= gpu-bin
gpu-check:
	CUDA_HOME="$(CUDA_HOME)" GPU_BIN="$(GPU_BIN)" scripts/gpu_window.sh

gpu-bin:
	$(MAKE) CUDA=1 $(TEST_BIN) $(BENCH_GPU_BIN) $(BUILD)/gpt
	rm -rf $(GPU_BIN) && mkdir -p $(GPU_BIN)/include
	for b in $(TEST_BIN) $(BENCH_GPU_BIN) $(BUILD)/gpt; do strip --strip-debug -o $(GPU_BIN)/$${b##*/} $$b; done
	cp -r /usr/include/doctest /usr/include/nlohmann /usr/include/zlib.h /usr/include/zconf.h $(GPU_BIN)/include/
	{ echo "built $$(git rev-parse --short HEAD) $$(date -u '+%F %T') UTC"; $(NVCC) --version | tail -n 1; } >$(GPU_BIN)/BUILD_INFO
	@du -sm $(GPU_BIN) | awk '{ print "gpu-bin: " $$1 " MiB (budget 40)"; exit ($$1 >= 40) }'

# ---- benchmarks ----
BENCH_GPU_BIN := $(BUILD)/bench_gpu
$(BENCH_BIN): bench/bench_ops.cpp $(LIB)
	@mkdir -p $(BUILD)
	$(CXX) $(CXXFLAGS) $< $(LIB) $(LDLIBS) -o $@

# GPU rows (matmul TFLOP/s, softmax / layernorm / add GB/s); prints "no GPU: skipped" without one.
$(BENCH_GPU_BIN): bench/bench_gpu.cpp $(LIB)
	@mkdir -p $(BUILD)
	$(CXX) $(CXXFLAGS) $< $(LIB) $(LDLIBS) -o $@

# 4-bit products against f32 (matvec at batch 1, GEMM at batch 64 and 256), CPU, 2 threads.
BENCH_QUANT_BIN := $(BUILD)/bench_quant
$(BENCH_QUANT_BIN): bench/bench_quant.cpp $(LIB)
	@mkdir -p $(BUILD)
	$(CXX) $(CXXFLAGS) $< $(LIB) $(LDLIBS) -o $@

# QLoRA against LoRA on a ~100M LLaMA-style GPT: tensor bytes and loss (about a minute; not in `make bench`).
BENCH_QLORA_BIN := $(BUILD)/bench_qlora_memory
$(BENCH_QLORA_BIN): bench/bench_qlora_memory.cpp $(LIB)
	@mkdir -p $(BUILD)
	$(CXX) $(CXXFLAGS) $< $(LIB) $(LDLIBS) -o $@
.PHONY: bench-qlora-memory
bench-qlora-memory: $(BENCH_QLORA_BIN)
	./$(BENCH_QLORA_BIN)

# The f32 FMA roof of this CPU (AVX-512 where the machine has it), the ceiling the GEMM figures
# are read against; not part of `make bench`.
$(BUILD)/fma_peak: bench/fma_peak.cpp
	@mkdir -p $(BUILD)
	$(CXX) -std=c++17 -O3 -pthread $(if $(filter x86_64,$(shell uname -m)),-mavx512f,) $< -o $@

bench: $(BENCH_BIN) $(BENCH_GPU_BIN) $(BENCH_QUANT_BIN)
	./$(BENCH_BIN)
	./$(BENCH_GPU_BIN)
	./$(BENCH_QUANT_BIN)

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(EXAMPLE_SUPPORT:.o=.d) $(EXAMPLES:$(BUILD)/%=$(BUILD)/examples/%.d)
