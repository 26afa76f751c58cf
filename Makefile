# kipvs — the two set-up commands are `make demo` and `make test`; everything else is a step of theirs.
# TypeScript is compiled once by tsc into build/ (ESM); jest runs the compiled tests, the real-kernel
# scenarios run the same compiled JS inside a qemu VM (vm/) or a fresh netns on a host that has IPVS.

SHELL := /bin/bash
NODE_MODULES := node_modules/.package-lock.json
JEST := node --experimental-vm-modules --no-warnings node_modules/.bin/jest
KERNEL_OUT := build/kernel-results
SOAK_OUT := build/soak-results

.PHONY: all build test test-unit test-kernel kernel-scenarios test-soak bench demo clean

all: build

$(NODE_MODULES): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

include native-bindings/native.mk
include vm/vm.mk

build: $(NODE_MODULES) native
	npx tsc -p tsconfig.json

test-unit: build
	$(JEST) --selectProjects unit

# Boots the real kernel once, runs every compiled scenario in it and leaves JSON results for jest.
kernel-scenarios: build vm
	rm -rf $(KERNEL_OUT) && mkdir -p $(KERNEL_OUT)
	vm/run --out $(KERNEL_OUT) -- node build/spec/kernel/run-scenarios.js $(KERNEL_OUT)

test-kernel: kernel-scenarios
	$(JEST) --selectProjects kernel

test: test-unit test-kernel

# Long fault tests (minutes), KIPVS_SOAK=1: on the real kernel the CLI agent SIGKILLed under live TCP
# traffic and started again (with the quick fault scenarios again), then the kernel-fault loop over 30 more seeds.
test-soak: build vm
	rm -rf $(SOAK_OUT) && mkdir -p $(SOAK_OUT)
	KIPVS_SOAK=1 vm/run --out $(SOAK_OUT) -- node build/spec/kernel/run-scenarios.js $(SOAK_OUT) faults:
	KIPVS_SOAK=1 KIPVS_KERNEL_RESULTS=$(SOAK_OUT)/results.json $(JEST) build/spec/kernel/faults.test.js --selectProjects kernel
	KIPVS_SOAK=1 $(JEST) build/spec/unit/faults-kernel.test.js --selectProjects unit

# Native benchmark (in-memory kernel, 1k/5k/10k services) here, then in the VM: programming and
# dumping 1k and 5k services against ipvsadm, and the agent's network programming latency under churn.
bench: build vm
	node build/bench/native.js
	vm/run -- node build/bench/kernel.js 1000:3,5000:1 10
	vm/run -- node build/bench/latency.js 1000 10 200 4 1000,0

# The main job on a real kernel: sample Services, real HTTP traffic, a live scheduler switch.
demo: build vm
	vm/run -- node build/demo/run.js

clean:
	rm -rf build native-bindings/build
