# Makefile fragment for the native addon (included by the main Makefile).
# `make native` builds native-bindings/build/Release/kipvs_netns.node with the project's local
# node-gyp, only when the .node is older than binding.gyp or a source under src/.
# Headers come from the installed Node (NATIVE_NODEDIR, default: the prefix of `node` in PATH,
# e.g. /usr -> /usr/include/node), so nothing is downloaded.

NATIVE_DIR     := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
NATIVE_ROOT    := $(abspath $(NATIVE_DIR)/..)
NATIVE_NODEGYP ?= $(NATIVE_ROOT)/node_modules/.bin/node-gyp
NATIVE_NODEDIR ?= $(abspath $(dir $(shell command -v node))..)
NATIVE_ADDON   := $(NATIVE_DIR)/build/Release/kipvs_netns.node
NATIVE_SOURCES := $(NATIVE_DIR)/binding.gyp $(wildcard $(NATIVE_DIR)/src/*.cc $(NATIVE_DIR)/src/*.h)

.PHONY: native native-clean

native: $(NATIVE_ADDON)

$(NATIVE_ADDON): $(NATIVE_SOURCES)
	cd $(NATIVE_DIR) && $(NATIVE_NODEGYP) rebuild --nodedir=$(NATIVE_NODEDIR)
	@touch $@

native-clean:
	rm -rf $(NATIVE_DIR)/build
