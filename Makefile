# Makefile - builds the safepickle analyzer library, CLI and preload, and runs
# every test stage. Sources are picked up by wildcard: adding a .c file to
# analyzer/, analyzer/cli/, preload/, test/unit/ or test/fuzz/ needs no edit here.

PREFIX   ?= /usr/local
DESTDIR  ?=
BUILD    ?= build
CC       ?= gcc
PYTHON   ?= /usr/bin/python3
FUZZ_SECONDS ?= 20
VERSION  := 0.1.0
KB_INDEX ?= 1
# `make install` builds the environment index for $(PYTHON) (KB_INDEX=0 skips it; a staged
# install with DESTDIR, e.g. a package build, skips it too: the target machine builds it),
# with its per-file cache in the build tree, so a second install parses only what changed
KB_CACHE ?= $(abspath $(BUILD))/kb-index.cache

WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden -Ianalyzer -Ipreload -I$(BUILD)/gen \
              -D_GNU_SOURCE -DSPA_VERSION=\"$(VERSION)\" \
              -DSPA_KB_INDEX_DEFAULT=\"$(PREFIX)/share/safepickle/kb-index.tsv\"
LIBS     := -lcjson -lz -llzma -lbz2 -lzstd -llz4 -lm
# The CLI links none of the decompression libraries: it loads each at its first
# use (analyzer/cli/codecs_dl.c), and packs its relative relocations (DT_RELR,
# glibc >= 2.36), which are most of a PIE's start-up pages (analyzer/README.md, "Memory")
CLI_LIBS := -Wl,-z,pack-relative-relocs -lcjson -lm
PRELOAD_LIBS := $(LIBS) -ldl -lpthread

ANALYZER_SRC := $(wildcard analyzer/*.c) $(wildcard analyzer/*.S)
CLI_SRC      := $(wildcard analyzer/cli/*.c) $(wildcard analyzer/cli/*.S)
PRELOAD_SRC  := $(wildcard preload/*.c)
UNIT_SRC     := $(wildcard test/unit/test_*.c)
FUZZ_SRC     := $(wildcard test/fuzz/fuzz_*.c)

obj = $(patsubst %.S,$(BUILD)/obj/%.o,$(patsubst %.c,$(BUILD)/obj/%.o,$(1)))
ANALYZER_OBJ := $(call obj,$(ANALYZER_SRC))
CLI_OBJ      := $(call obj,$(CLI_SRC))
PRELOAD_OBJ  := $(call obj,$(PRELOAD_SRC))
UNIT_BIN     := $(patsubst test/unit/%.c,$(BUILD)/test/%,$(UNIT_SRC))

.PHONY: installed-files-quick installed-files upstream-quick upstream deb all deps build test unit asan fuzz fuzz-smoke integration race race-report diff-long bench demo install uninstall clean FORCE

all: deps build
build: $(BUILD)/libspa.a $(BUILD)/safepickle $(BUILD)/libsafepickle.so $(BUILD)/libspa.so

# Debian packages for the build, tests and demo (idempotent; apt-get as root).
deps:
	@bash test/install-deps.sh

# Header dependencies are exact: the compiler writes them (-MMD -MP) next to each
# object, and every rule below that compiles includes them. Generated files and
# files pulled in by .incbin (which -MMD cannot see) are declared by hand below.
DEPFLAGS = -MMD -MP -MF $@.d
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c $< -o $@

# .incbin paths in analyzer/*.S are relative to the repository root.
$(BUILD)/obj/%.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -Wa,-I. -c $< -o $@
$(BUILD)/obj/analyzer/policy_default.o: policies/default.json
$(BUILD)/obj/analyzer/cli/kbindex_data.o: analyzer/cli/kbindex.py

# The knowledge base's line table, split from the TSV files once (kb.c includes it).
$(BUILD)/gen/kb_lines.inc: analyzer/kb_lines.awk $(wildcard analyzer/kb/*.tsv)
	@mkdir -p $(dir $@)
	awk -f analyzer/kb_lines.awk analyzer/kb/stdlib.tsv analyzer/kb/ml.tsv > $@.tmp && mv $@.tmp $@
# Module-valued attributes (analyzer/kb/modattr.tsv, test/kbgen.py), sorted for bsearch.
$(BUILD)/gen/kb_modattr.inc: analyzer/kb/modattr.tsv
	@mkdir -p $(dir $@)
	LC_ALL=C awk -F '\t' '$$1 == "@modattr" { printf "KBM(\"%s\", \"%s\")\n", $$2, $$3 }' $< | LC_ALL=C sort > $@.tmp && mv $@.tmp $@
# Re-exported callables judged as their definition (analyzer/kb/reexport.tsv, test/kbgen.py).
$(BUILD)/gen/kb_reexport.inc: analyzer/kb/reexport.tsv
	@mkdir -p $(dir $@)
	LC_ALL=C awk -F '\t' '$$1 == "@reexport" { printf "KBR(\"%s\", \"%s\")\n", $$2, $$3 }' $< | LC_ALL=C sort > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/analyzer/kb.o: $(BUILD)/gen/kb_lines.inc $(BUILD)/gen/kb_modattr.inc $(BUILD)/gen/kb_reexport.inc

# The opcodes' stack effects as numbers, derived from opcodes.def's pickletools names.
$(BUILD)/gen/opcodes_stack.inc: analyzer/opcodes_stack.awk analyzer/opcodes.def
	@mkdir -p $(dir $@)
	awk -f analyzer/opcodes_stack.awk analyzer/opcodes.def > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/analyzer/opcodes.o $(BUILD)/obj/analyzer/sniff.o: $(BUILD)/gen/opcodes_stack.inc

$(BUILD)/libspa.a: $(ANALYZER_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/safepickle: $(CLI_OBJ) $(BUILD)/libspa.a
	$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libspa.a $(CLI_LIBS)

# The analyzer as a shared library with a flat C ABI (capi.h), for the Python package.
$(BUILD)/libspa.so: $(ANALYZER_OBJ) analyzer/capi.map
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(ANALYZER_OBJ) -Wl,--version-script=analyzer/capi.map -Wl,-z,now $(LIBS)

$(BUILD)/libsafepickle.so: $(PRELOAD_OBJ) $(BUILD)/libspa.a preload/exports.map
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(PRELOAD_OBJ) $(BUILD)/libspa.a \
	  -Wl,--version-script=preload/exports.map -Wl,-z,now -Wl,-soname,libsafepickle.so $(PRELOAD_LIBS)

# ---------------------------------------------------------------- unit tests
$(BUILD)/test/%: test/unit/%.c $(BUILD)/libspa.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -Itest/unit -o $@ $< $(BUILD)/libspa.a $(LIBS)

unit: deps $(UNIT_BIN)
	@bash test/unit/run.sh $(UNIT_BIN)

# The same unit tests under ASan + UBSan (clang), halting on the first error.
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
asan: deps
	$(MAKE) --no-print-directory BUILD=build-asan CC=clang CFLAGS="-O1 -g $(SAN_FLAGS)" \
	  LDFLAGS="$(SAN_FLAGS)" build-asan/libspa.a $(patsubst $(BUILD)/%,build-asan/%,$(UNIT_BIN))
	ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  bash test/unit/run.sh $(patsubst $(BUILD)/%,build-asan/%,$(UNIT_BIN))

# ---------------------------------------------------------------- fuzzing
FUZZ_CFLAGS := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
ifneq ($(BUILD),build-fuzz)
# the instrumented library is brought up to date on every fuzz run, so that a
# harness never runs against stale analyzer code
build-fuzz/libspa.a: FORCE
	$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang CFLAGS="$(FUZZ_CFLAGS)" build-fuzz/libspa.a
endif
FORCE:
build-fuzz/%: test/fuzz/%.c build-fuzz/libspa.a
	clang $(patsubst -Werror,,$(ALL_CFLAGS)) $(DEPFLAGS) -O1 -g -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=all -o $@ $< build-fuzz/libspa.a $(LIBS)

FUZZ_BIN := $(patsubst test/fuzz/%.c,build-fuzz/%,$(FUZZ_SRC))
fuzz: deps $(FUZZ_BIN)
	@bash test/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN)
fuzz-smoke: deps $(FUZZ_BIN)
	@bash test/fuzz/run.sh 5 $(FUZZ_BIN)

# ---------------------------------------------------------------- integration
integration: all
	cd test/integration && $(PYTHON) -m pytest -q -p no:cacheprovider --durations=25

# Writers race loaders under the preload: every loader x writer x layers
# configuration, RACE_LOADS racing loads each (long: not part of `make test`,
# which runs the short fixed-count version in test_race.py). Resumable: counts
# are kept per chunk in RACE_STATE for this build of the library, and a run
# stopped at any point continues where it stopped; RACE_SHARD=I/N runs every
# Nth configuration (test/README.md). `make race-report`: the counts so far, also
# written to test/bench/results.md (section bench:race).
RACE_LOADS ?= 100000
RACE_SHARD ?= 1/1
RACE_STATE ?= $(BUILD)/race-state.jsonl
race: build
	cd test/integration && SAFEPICKLE_BUILD=$(abspath $(BUILD)) $(PYTHON) race.py all $(RACE_LOADS) \
	  --shard $(RACE_SHARD) --state $(abspath $(RACE_STATE))
race-report:
	cd test/integration && SAFEPICKLE_BUILD=$(abspath $(BUILD)) $(PYTHON) race.py report $(RACE_LOADS) \
	  --state $(abspath $(RACE_STATE)) --results $(abspath test/bench/results.md)

# The long container differential run (make test runs 10,000 mutants per
# family with a fixed seed; this runs 100,000 with another seed, and loads
# 2,000 kept mutants per family under the preload).
diff-long: all
	cd test/integration && SAFEPICKLE_DIFF_N=$${SAFEPICKLE_DIFF_N:-100000} SAFEPICKLE_DIFF_SEED=$${SAFEPICKLE_DIFF_SEED:-7} \
	  SAFEPICKLE_DIFF_SAMPLE=$${SAFEPICKLE_DIFF_SAMPLE:-2000} $(PYTHON) -m pytest -q -p no:cacheprovider test_diff_containers.py

# Debian-packaged upstream suites (joblib, numpy, scipy, pandas, sklearn, dask's local
# cluster) plainly and under the preload, outcome by outcome (test/upstream/upstream.py),
# each bounded in time; the counts go to test/bench/results.md. `make test` runs a subset
# with tighter bounds and writes no results.
upstream: all
	nice $(PYTHON) test/upstream/upstream.py --preload $(BUILD)/libsafepickle.so
upstream-quick: all
	$(PYTHON) test/upstream/upstream.py --quick --timeout 600 --test-timeout 120 --results '' \
	  --preload $(BUILD)/libsafepickle.so

# Every file the installed Debian packages and Python installations ship: scanned (none
# malicious/suspicious) and opened under the preload (none refused); `make test` a sample.
installed-files: all
	$(PYTHON) test/upstream/installed.py
installed-files-quick: all
	$(PYTHON) test/upstream/installed.py --sample 2000

# The README's test command.
test: all unit asan fuzz-smoke integration upstream-quick installed-files-quick

bench: all
	@bash test/bench/run.sh

# The README's first command: the main job on the embedded default policy.
demo: all
	@bash test/demo.sh

# ---------------------------------------------------------------- install
# The library goes to PREFIX/lib/safepickle/ (where the CLI and kernelspecs find it) and,
# as a symlink, to PREFIX/lib/, where ld.so looks for a bare LD_PRELOAD=libsafepickle.so
# (/usr/lib always; /usr/local/lib through ld.so.cache, hence ldconfig). install ends by
# asking ld.so itself whether the bare name loads the installed file, and otherwise prints
# the exact LD_PRELOAD value to use (also `pkg-config --variable=preload safepickle`).
INSTALLED_LIB = $(PREFIX)/lib/safepickle/libsafepickle.so
LDCONFIG ?= /sbin/ldconfig
# The Python package goes where $(PYTHON) looks for it under PREFIX: Debian's
# dist-packages (unversioned for /usr, versioned for /usr/local and others).
PYMINOR := $(shell $(PYTHON) -c 'import sys; print(sys.version_info[1])' 2>/dev/null)
BIN     ?= $(BUILD)
PYSITE  ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/python3/dist-packages,$(PREFIX)/lib/python3.$(PYMINOR)/dist-packages)
PYPKG   := $(wildcard analyzer/python/safepickle/*.py)
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/safepickle \
	  $(DESTDIR)$(PREFIX)/share/safepickle/policies $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0755 $(BIN)/safepickle $(DESTDIR)$(PREFIX)/bin/safepickle
	install -m 0755 $(BIN)/libsafepickle.so $(DESTDIR)$(INSTALLED_LIB)
	ln -sfn safepickle/libsafepickle.so $(DESTDIR)$(PREFIX)/lib/libsafepickle.so
	$(if $(wildcard policies/*.json policies/*.md),install -m 0644 $(wildcard policies/*.json policies/*.md) $(DESTDIR)$(PREFIX)/share/safepickle/policies/)
	install -m 0644 analyzer/cli/safepickle.1 $(DESTDIR)$(PREFIX)/share/man/man1/safepickle.1
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' analyzer/cli/safepickle.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/safepickle.pc
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/safepickle.pc
	install -m 0755 $(BIN)/libspa.so $(DESTDIR)$(PREFIX)/lib/safepickle/libspa.so
	install -d $(DESTDIR)$(PYSITE)/safepickle
	install -m 0644 $(PYPKG) $(DESTDIR)$(PYSITE)/safepickle/
	@if [ -z "$(DESTDIR)" ]; then $(LDCONFIG) || echo "note: $(LDCONFIG) failed (not root?)"; fi
	@real=$$(realpath "$(DESTDIR)$(INSTALLED_LIB)"); \
	if [ -z "$(DESTDIR)" ] && LD_PRELOAD=libsafepickle.so /bin/grep -qF "$$real" /proc/self/maps 2>/dev/null; then \
	  echo "installed. ld.so loads $(INSTALLED_LIB) by its bare name: LD_PRELOAD=libsafepickle.so"; \
	else \
	  echo "installed. Use the exact value (ld.so does not find this install by a bare name$(if $(DESTDIR), from DESTDIR)):"; \
	  echo "    LD_PRELOAD=$(INSTALLED_LIB)"; \
	  echo "  also: pkg-config --variable=preload safepickle (PKG_CONFIG_PATH=$(PREFIX)/lib/pkgconfig)"; \
	fi
	$(if $(and $(filter 1,$(KB_INDEX)),$(if $(DESTDIR),,1)),$(DESTDIR)$(PREFIX)/bin/safepickle kb index --python $(PYTHON) --out $(DESTDIR)$(PREFIX)/share/safepickle/kb-index.tsv --cache $(KB_CACHE))

# A Debian package of the install with PREFIX=/usr (test/container/debian/ holds its
# control file and maintainer scripts). `make deb` writes $(BUILD)/safepickle_VERSION_ARCH.deb.
# Its programs look for the environment index where its postinst builds it, in /var/lib (made
# on the target machine, not shipped): kb.c and cmd_kb.c, the only users of the path, are
# compiled again with it and the three programs relinked in $(BUILD)/deb.
DEBARCH := $(shell dpkg --print-architecture 2>/dev/null)
DEB     := $(BUILD)/safepickle_$(VERSION)_$(DEBARCH).deb
DEB_KB_INDEX := /var/lib/safepickle/kb-index.tsv
DEB_BIN := $(BUILD)/deb
DEB_ANALYZER_OBJ := $(filter-out $(BUILD)/obj/analyzer/kb.o,$(ANALYZER_OBJ)) $(DEB_BIN)/obj/analyzer/kb.o
DEB_CLI_OBJ := $(filter-out $(BUILD)/obj/analyzer/cli/cmd_kb.o,$(CLI_OBJ)) $(DEB_BIN)/obj/analyzer/cli/cmd_kb.o
$(DEB_BIN)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -DSPA_KB_INDEX_DEFAULT=%,$(ALL_CFLAGS)) -DSPA_KB_INDEX_DEFAULT=\"$(DEB_KB_INDEX)\" $(DEPFLAGS) -c $< -o $@
$(DEB_BIN)/obj/analyzer/kb.o: $(BUILD)/gen/kb_lines.inc $(BUILD)/gen/kb_modattr.inc $(BUILD)/gen/kb_reexport.inc
$(DEB_BIN)/libspa.a: $(DEB_ANALYZER_OBJ)
	rm -f $@ && ar rcs $@ $^
$(DEB_BIN)/safepickle: $(DEB_CLI_OBJ) $(DEB_BIN)/libspa.a
	$(CC) $(ALL_CFLAGS) -o $@ $(DEB_CLI_OBJ) $(DEB_BIN)/libspa.a $(CLI_LIBS)
$(DEB_BIN)/libspa.so: $(DEB_ANALYZER_OBJ) analyzer/capi.map
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(DEB_ANALYZER_OBJ) -Wl,--version-script=analyzer/capi.map -Wl,-z,now $(LIBS)
$(DEB_BIN)/libsafepickle.so: $(PRELOAD_OBJ) $(DEB_BIN)/libspa.a preload/exports.map
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(PRELOAD_OBJ) $(DEB_BIN)/libspa.a \
	  -Wl,--version-script=preload/exports.map -Wl,-z,now -Wl,-soname,libsafepickle.so $(PRELOAD_LIBS)
deb: $(DEB)
$(DEB): build $(DEB_BIN)/safepickle $(DEB_BIN)/libspa.so $(DEB_BIN)/libsafepickle.so Makefile $(wildcard test/container/debian/*)
	rm -rf $(BUILD)/debroot
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(BUILD))/debroot PREFIX=/usr BIN=$(abspath $(DEB_BIN)) >/dev/null
	rm -rf $(BUILD)/debroot/usr/lib/python3/dist-packages/safepickle/__pycache__
	install -d -m 0755 $(BUILD)/debroot/DEBIAN
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@ARCH@|$(DEBARCH)|' \
	  -e "s|@SIZE@|$$(du -sk --exclude=DEBIAN $(BUILD)/debroot | cut -f1)|" \
	  test/container/debian/control.in > $(BUILD)/debroot/DEBIAN/control
	install -m 0755 test/container/debian/postinst test/container/debian/prerm \
	  test/container/debian/postrm $(BUILD)/debroot/DEBIAN/
	install -m 0644 test/container/debian/triggers $(BUILD)/debroot/DEBIAN/
	dpkg-deb --root-owner-group -Zxz --build $(BUILD)/debroot $@

# Kernelspecs: those `safepickle jupyter install` wrote for the invoking user and in
# PREFIX are removed first (a kernel whose library is gone refuses to run cells anyway).
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -x $(PREFIX)/bin/safepickle ]; then \
	  $(PREFIX)/bin/safepickle jupyter uninstall --all || true; \
	  $(PREFIX)/bin/safepickle jupyter uninstall --all --prefix $(PREFIX) || true; \
	  echo "note: other users' safepickle kernelspecs are not known here: each refuses to run cells"; \
	  echo "      without the library; remove them with 'safepickle jupyter uninstall --all' as that user"; \
	fi
	rm -f $(DESTDIR)$(PREFIX)/bin/safepickle $(DESTDIR)$(INSTALLED_LIB) $(DESTDIR)$(PREFIX)/lib/libsafepickle.so \
	  $(DESTDIR)$(PREFIX)/share/man/man1/safepickle.1 $(DESTDIR)$(PREFIX)/lib/pkgconfig/safepickle.pc
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/safepickle/policies/,$(notdir $(wildcard policies/*.json policies/*.md)))
	rm -f $(DESTDIR)$(PREFIX)/lib/safepickle/libspa.so $(addprefix $(DESTDIR)$(PYSITE)/safepickle/,$(notdir $(PYPKG)))
	rm -rf $(DESTDIR)$(PYSITE)/safepickle/__pycache__
	-rmdir $(DESTDIR)$(PYSITE)/safepickle 2>/dev/null
	rm -f $(DESTDIR)$(PREFIX)/share/safepickle/kb-index.tsv
	-rmdir $(DESTDIR)$(PREFIX)/lib/safepickle $(DESTDIR)$(PREFIX)/share/safepickle/policies \
	  $(DESTDIR)$(PREFIX)/share/safepickle 2>/dev/null
	@if [ -z "$(DESTDIR)" ]; then $(LDCONFIG) || true; fi

clean:
	rm -rf build build-asan build-fuzz

# the dependency files the compiler wrote (absent before the first build)
-include $(shell find $(BUILD) build-fuzz -name '*.d' 2>/dev/null)
