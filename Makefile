# ferry — make targets. `make run` and `make test` are all a new machine needs.
CARGO ?= cargo
PORT ?= 8080

.PHONY: build release run test lint fmt bench demo fuzz fuzz-smoke fuzz-ci clean

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## Start a development node: loopback, data under ./.ferry, no Docker, no panel.
run:
	@# No --quiet: the first build takes minutes on a fresh machine; show it.
	$(CARGO) run -- serve --dev --dir .ferry --port $(PORT)

## Every test: unit, integration (real nodes, real HTTP, real files), Docker.
test:
	$(CARGO) test --all-targets -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	@if [ -x scripts/bench.sh ]; then scripts/bench.sh; else echo "make bench: not yet (the benchmark lands with the performance issue)"; fi

demo:
	@if [ -x scripts/demo.sh ]; then scripts/demo.sh; else echo "make demo: not yet (the demo lands with the CLI issue)"; fi

clean:
	$(CARGO) clean
	rm -rf .ferry

## Fuzzing (cargo-fuzz; fuzz/README.md). The stable toolchain runs it with
## RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags). Each target starts from
## its committed seeds plus whatever fuzz/corpus/ (not committed) gathered;
## a crash stops the run and leaves the input in fuzz/artifacts/<target>/.
FUZZ_TARGETS ?= http_head http_chunked multipart archive_extract
FUZZ_SECONDS ?= 60
FUZZ_RUN = RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir fuzz

## Every target for FUZZ_SECONDS each (60 s by default).
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_RUN) $$t fuzz/corpus/$$t fuzz/corpus-seed/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; \
	done

## The short bounded run CI makes: about 20 s of fuzzing in all (plus the
## build), from the committed seeds (and fuzz/corpus/ when present).
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=5

## For .ci/run: installs cargo-fuzz when missing, then the smoke run.
fuzz-ci:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	$(MAKE) fuzz-smoke
