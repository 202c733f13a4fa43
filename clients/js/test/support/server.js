// The real demo server for the tests: spawned from the release build, on a free port.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

/** The server binary: $CHAT_SERVER_BIN, or the release build of the repository. */
export function serverBinary() {
  const bin = process.env.CHAT_SERVER_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, 'target'), 'release/examples/server');
  if (!existsSync(bin)) {
    throw new Error(`no demo server at ${bin}: build it with \`cargo build --release --example server\` (scripts/js_check.sh does)`);
  }
  return bin;
}

/**
 * Starts the demo server on `127.0.0.1:0` (or `addr`) and resolves once it prints its port.
 * @returns {Promise<{port: number, url: string, stop: () => Promise<number|null>, log: () => string}>}
 */
export function startServer(addr = '127.0.0.1:0') {
  const child = spawn(serverBinary(), ['--addr', addr], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the server printed no port within 10 s:\n${out}`));
    }, 10_000);
    const onData = (chunk) => {
      out += chunk;
      const found = /ws:\/\/127\.0\.0\.1:(\d+)\/ws/.exec(out);
      if (!found) return;
      clearTimeout(timer);
      const port = Number(found[1]);
      resolve({
        port,
        url: `ws://127.0.0.1:${port}/ws`,
        log: () => out,
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
          const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
          const code = await exited;
          clearTimeout(killer);
          return code;
        },
      });
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', (chunk) => {
      out += chunk;
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code}) before printing its port:\n${out}`));
    });
  });
}
