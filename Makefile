# Thin wrapper: every target installs missing Debian packages, configures
# with CMake and builds, so each works from a fresh clone on Debian 12.
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
PREFIX     ?= /usr/local

.PHONY: all setup build build-asan build-tsan fuzz demo test test-here test-tsan bench clean install uninstall

all: build

setup:
	@sh scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: setup
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSTRATA_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

# ThreadSanitizer: the daemon's concurrency tests (label tsan), which need
# strata-fs alone. The launcher cannot run under it: TSan starts a thread,
# and a threaded process may not unshare a user namespace.
build-tsan: setup
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSTRATA_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS) --target strata-fs

test-tsan: build-tsan
	@cd $(TSAN_BUILD) && ctest --output-on-failure -L tsan -j 2

# libFuzzer targets (fuzz/: option parser, layer import, image config),
# built with clang under ASan/UBSan. make test runs each briefly over its
# corpus (ctest -L fuzz); run one longer by hand as fuzz/CMakeLists.txt says.
fuzz: setup
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSTRATA_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target strata_fuzz

# The long reliability runs (200 detached containers, 1000 sequential run
# --rm, kill -9 loops with more iterations): not part of make test.
soak: build
	@cmake -S . -B $(BUILD) -DSTRATA_SOAK=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && STRATA_SOAK=1 ctest --output-on-failure -L 'soak|reliability'

demo: build
	@sh scripts/demo.sh $(BUILD)

# Every test on the release build, then the sanitizer build of the same
# binaries through the tests labelled "asan" (the filesystem and launcher
# integration tests), so ASan/UBSan see the daemon under real load; the
# daemon's concurrency tests under ThreadSanitizer (label tsan: a report
# fails them); then a short run of each fuzzer.
test: setup
	@sh scripts/test.sh

test-here: build build-asan build-tsan fuzz
	@cd $(BUILD) && ctest --output-on-failure -j 2
	@cd $(ASAN_BUILD) && ctest --output-on-failure -L asan -j 2
	@cd $(TSAN_BUILD) && ctest --output-on-failure -L tsan -j 2
	@cd $(FUZZ_BUILD) && ctest --output-on-failure -L fuzz -j 2

bench: build
	@sh bench/run.sh $(BUILD) $(BENCH_ARGS)

# make install [PREFIX=/usr/local] [DESTDIR=/staging]: the programs in
# PREFIX/bin (debug info in PREFIX/bin/.debug), man pages in PREFIX/share/man.
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

# Removes what the last install wrote (its manifest, kept in the build tree).
uninstall:
	@test -f $(BUILD)/install_manifest.txt || { echo "uninstall: nothing installed from $(BUILD) (no install_manifest.txt)" >&2; exit 1; }
	@while read -r f || [ -n "$$f" ]; do rm -f "$(DESTDIR)$$f"; echo "removed $(DESTDIR)$$f"; done < $(BUILD)/install_manifest.txt
	@rmdir "$(DESTDIR)$(PREFIX)/bin/.debug" 2>/dev/null || true

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
