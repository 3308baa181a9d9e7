// Loaded by mocha before any spec (.mocharc.json). An unhandled rejection anywhere fails the
// run instead of being lost: mocha hands rejections from test code back to the process, and
// rethrowing here turns one into an uncaught exception, which mocha reports as a failure of
// the running test; the exit code covers one that surfaces between tests. Uncaught exceptions
// need no hook of ours: mocha already listens for them and fails the running test.
process.on('unhandledRejection', (reason) => {
  console.error('unhandled rejection in tests:', reason);
  process.exitCode = 1;
  throw reason;
});
