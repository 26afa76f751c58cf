// jest runs the compiled ESM output (tsc → build/), so there is no TypeScript transform in the
// test path: one compiler, one module system (ESM), the same JS the agent ships.
// Two projects: unit (pure functions, the fake kernel) and kernel (assertions on what the real-kernel
// scenarios observed inside the VM; `make test-kernel` produces build/kernel-results first).
const common = { testEnvironment: 'node', transform: {} };
export default {
  testTimeout: 20000,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/build/spec/unit/**/*.test.js'] },
    { ...common, displayName: 'kernel', testMatch: ['<rootDir>/build/spec/kernel/**/*.test.js'] },
  ],
};
