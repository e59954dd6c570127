# weir's front door. `make run` and `make test` work on a fresh Debian 12 machine as root.
.PHONY: all deps build build-asan run test test-release test-asan bench fuzz-build fuzz-smoke clean format

JOBS ?= $(shell nproc)
CMAKE_COMMON = -G Ninja -DWEIR_WERROR=ON
FUZZ_SECONDS ?= 20

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B build $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build build -j $(JOBS)

build-asan: deps
	@cmake -S . -B build-asan $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Debug \
	  -DWEIR_ASAN=ON -DWEIR_UBSAN=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)

run: build
	@echo "weir: starting the built-in default (proxy 127.0.0.1:8080 -> demo origin 127.0.0.1:8081)"
	@echo "weir: try   curl -i http://127.0.0.1:8080/   (Ctrl-C stops it)"
	./build/weir

test-release: build
	@echo "== release build: unit + integration =="
	cd build && ctest --output-on-failure -j 2

test-asan: build-asan
	@echo "== ASan+UBSan build: unit + integration =="
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

# Release first, sanitizers last, so ctest's summary of the ASan+UBSan run closes the output.
test: test-release test-asan

bench: build
	bash bench/run.sh

fuzz-build: deps
	@CC=clang cmake -S . -B build-fuzz $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Debug \
	  -DWEIR_FUZZ=ON -DWEIR_BUILD_TESTS=OFF -DWEIR_NO_POOLS=ON \
	  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -g" >/dev/null
	@cmake --build build-fuzz -j $(JOBS)

fuzz-smoke: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/smoke.sh build-fuzz/fuzz

# Static gates (docs/SECURITY.md): checksrc, clang-tidy and cppcheck over src/ app/ examples/.
.PHONY: lint
lint: deps
	@bash scripts/lint.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz
