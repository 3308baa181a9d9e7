// Loaded by mocha before any spec (.mocharc.json): an unhandled rejection or uncaught
// exception anywhere fails the run instead of being lost.
process.on('unhandledRejection', (reason) => {
  console.error('unhandled rejection in tests:', reason);
  process.exitCode = 1;
  throw reason;
});
