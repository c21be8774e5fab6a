// Preloaded into chopsticks by anchor/tests/support/chopsticks.rs
// (`node --require <this file> .../chopsticks.cjs ...`): the test process holds the
// write end of chopsticks' stdin, so when that process dies in any way (panic,
// abort, SIGKILL, a harness timeout) stdin reaches end-of-file and chopsticks exits
// instead of staying behind with ~300 MB of memory and a port.
//
// Worker threads inherit --require, and a worker's process.stdin ends at once: only
// the main thread may watch it, or chopsticks' wasm executor worker would exit.
if (require('node:worker_threads').isMainThread) {
    process.stdin.on('end', () => process.exit(0));
    process.stdin.on('error', () => process.exit(0));
    process.stdin.resume();
}
