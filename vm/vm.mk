# vm/vm.mk — owned by vm/ (real-kernel harness); included by the main Makefile.
#   make vm          build the VM kernel + initramfs into build/vm/ (only when missing; vm/run does the same)
#   make vm-rebuild  rebuild it (e.g. after editing vm/init or vm/build.sh, or to pick up a newer kernel)
#   make vm-check    boot it (or use the host kernel, see vm/run) and run vm/smoke.sh: IPVS, dummy, netns, node
#   make vm-clean    drop build/vm/
VM_DIR := build/vm

.PHONY: vm vm-rebuild vm-check vm-clean

vm: $(VM_DIR)/kernel.env $(VM_DIR)/kernel $(VM_DIR)/initrd.img

# One run of vm/build.sh makes all three (grouped target).
$(VM_DIR)/kernel.env $(VM_DIR)/kernel $(VM_DIR)/initrd.img &:
	vm/build.sh $(VM_DIR)

vm-rebuild:
	vm/build.sh $(VM_DIR)

vm-check: vm
	rm -rf $(VM_DIR)/smoke && mkdir -p $(VM_DIR)/smoke
	vm/run --out $(VM_DIR)/smoke -- vm/smoke.sh $(abspath $(VM_DIR)/smoke)
	test -s $(VM_DIR)/smoke/smoke.ok

vm-clean:
	rm -rf $(VM_DIR)
