// jest runs the compiled ESM output (tsc → build/), so there is no TypeScript transform
// in the test path: one compiler, one module system (ESM), the same JS the agent ships.
export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/build/spec'],
  testMatch: ['**/*.test.js'],
  transform: {},
  testTimeout: 20000,
};
