# weir's front door. `make run` and `make test` work on a fresh Debian 12 machine as root.
.PHONY: all deps build build-asan run test test-release test-asan bench bench-callgrind bench-tls bench-h2 bench-cache fuzz-build fuzz-smoke clean format \
	build-tsan test-tsan build-memcheck memcheck build-failmalloc failmalloc soak

JOBS ?= $(shell nproc)
CMAKE_COMMON = -G Ninja -DWEIR_WERROR=ON
FUZZ_SECONDS ?= 40

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

# ctest shows a passing test's output to no one: list the skips pytest -rs reported in it.
SHOW_SKIPS = grep -h '^SKIPPED' Testing/Temporary/LastTest.log || echo "(no test skipped)"

test-release: build
	@echo "== release build: unit + integration =="
	cd build && ctest --output-on-failure -j 2 && { $(SHOW_SKIPS); }

test-asan: build-asan
	@echo "== ASan+UBSan build: unit + integration =="
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

# Release first, sanitizers last, so ctest's summary of the ASan+UBSan run closes the output
# (the release run's skips are listed after its own summary, before the ASan run starts).
test: test-release test-asan

# Dynamic gates (docs/SECURITY.md): ThreadSanitizer, valgrind memcheck, allocation failure.
PYTEST = /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider
TSAN_ENV = TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp"
# The tests that run several workers, the access-log writer, cross-thread posts and snapshots.
# Plus the load balancer (sets shared by workers, updated under RCU), the shared pool tier,
# the health-check and discovery threads.
# And the abuse limits (counters shared by every worker), timeouts, rejections (lingering
# closes), the fault suite (client aborts, panic mode), response buffering, and TLS (contexts
# shared by every worker, pooled TLS connections moving between workers through the shared tier),
# and HTTP/2 (streams of one connection sharing the worker's upstream pool with the other workers).
TSAN_TESTS = test_smoke.py test_threads.py test_shutdown.py test_examples.py test_access_log.py \
	test_http_proxy.py test_lb.py test_health.py test_discovery.py test_abuse.py \
	test_timeouts.py test_rejections.py test_faults.py test_buffering.py test_tls.py test_mtls.py \
	test_h2.py test_h2_upstream.py test_grpc.py test_websocket.py test_websocket_h2.py test_grpc_web.py \
	test_cache.py
VALGRIND = valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	--show-leak-kinds=definite --num-callers=30
MEMCHECK_TESTS = test_smoke.py test_http_proxy.py test_shutdown.py test_lb.py test_health.py \
	test_rejections.py test_faults.py test_defaults.py test_buffering.py test_tls.py test_mtls.py \
	test_h2.py test_h2_upstream.py test_grpc.py test_websocket.py test_websocket_h2.py test_grpc_web.py \
	test_cache.py
MEMCHECK_SELECT = methods_pass_through or content_length_upload or chunked_upload or \
	chunked_download or keepalive_20 or pipelined or http10 or head_ or no_body_statuses or \
	close_delimited or expect_100 or dead_backend or pooled_connection_closed or \
	get_through_config or graceful_signal or sigterm_with_idle or sigint_exits or \
	killing_a_backend or backup_used or consistent_hash_missing or failing_backend_out_and_back or \
	test_rejections or test_faults or test_defaults or panic_mode or test_buffering or \
	forwarded_as_https or sni_picks_the or plain_http_on or bad_handshake_closes or \
	upstream_tls_sends_the_sni or upstream_client_certificate or upstream_verification or \
	required_lets_in or forged_certificate or resumed_session_keeps or hooks_see_the or \
	bodies_both_ways or large_and_chunked_responses or client_reset_cancels or hpack_bomb or \
	rapid_reset or alpn_h2_on_tls or client_that_never_reads or graceful_stop_finishes or \
	h2_client_to_h2_tls_origin or origin_goaway_is_honoured or grpc_h2c_both_sides or \
	grpc_upstream_down or websocket_messages_ping or close_from_origin_and_origin_death or \
	over_h2_messages_ping or client_reset_closes_the_origin or wrong_accept or \
	unary_binary_with_deadline or text_mode_both_ways or trailers_only_response_on or \
	miss_then_hit or stampede_is_one_fetch or writer_failure_hands or revalidated_with or \
	stale_if_error or ranges_served or fill_cut_short or purge_from_allowed

build-tsan: deps
	@cmake -S . -B build-tsan $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DWEIR_TSAN=ON >/dev/null
	@cmake --build build-tsan -j $(JOBS)

test-tsan: build-tsan
	@echo "== ThreadSanitizer build: unit + multi-threaded integration tests =="
	cd build-tsan && $(TSAN_ENV) ctest --output-on-failure -j 2 -E '^(integration|soak)$$'
	cd tests/integration && $(TSAN_ENV) WEIR_BIN=$(CURDIR)/build-tsan/weir \
	  WEIR_EXAMPLES_DIR=$(CURDIR)/build-tsan/examples WEIR_SANITIZED=1 $(PYTEST) $(TSAN_TESTS)

# Release with debug info, no sanitizer, every pooled object through malloc.
build-memcheck: deps
	@cmake -S . -B build-memcheck $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DWEIR_NO_POOLS=ON -DWEIR_BUILD_TESTS=OFF >/dev/null
	@cmake --build build-memcheck -j $(JOBS)

memcheck: build-memcheck
	@echo "== valgrind memcheck: weir under valgrind for a subset of the integration tests =="
	cd tests/integration && WEIR_WRAPPER="$(VALGRIND)" WEIR_BIN=$(CURDIR)/build-memcheck/weir \
	  WEIR_EXAMPLES_DIR=$(CURDIR)/build-memcheck/examples \
	  $(PYTEST) $(MEMCHECK_TESTS) -k "$(MEMCHECK_SELECT)"

build-failmalloc: deps
	@cmake -S . -B build-failmalloc $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Debug -DWEIR_ASAN=ON \
	  -DWEIR_UBSAN=ON -DWEIR_FAILMALLOC=ON -DWEIR_BUILD_TESTS=OFF >/dev/null
	@cmake --build build-failmalloc -j $(JOBS)

failmalloc: build-failmalloc
	@echo "== allocation failure: every allocation of startup and of a request fails once =="
	cd tests/integration && WEIR_BIN=$(CURDIR)/build-failmalloc/weir WEIR_SANITIZED=1 WEIR_FAILMALLOC_GATE=1 \
	  $(PYTEST) test_failmalloc.py

# A long soak under mixed traffic and backend faults (tests/soak/soak.py); ctest runs 120 s of it.
SOAK_SECONDS ?= 600
soak: build
	SOAK_SECONDS=$(SOAK_SECONDS) WEIR_BIN=$(CURDIR)/build/weir /usr/bin/python3 tests/soak/soak.py

bench: build
	bash bench/run.sh

# Instructions per proxied request under valgrind (deterministic; bench/README.md).
bench-callgrind: build
	bash bench/callgrind.sh

# weir, nginx and HAProxy terminating TLS 1.3: CPU per request and per handshake (bench/README.md).
bench-tls: build
	bash bench/tls.sh

# HTTP/2: weir, nginx and HAProxy terminating h2 over TLS, and weir and HAProxy h2c -> h2c (bench/README.md).
bench-h2: build
	bash bench/h2.sh

# The cache: hit ratio on a Zipf trace, and a stampede through weir, nginx and Varnish.
bench-cache: build
	bash bench/cache_hitratio.sh
	bash bench/cache_stampede.sh

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

format: # the style lint checks (scripts/lint.sh step 0)
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz build-tsan build-memcheck build-failmalloc build-lint
