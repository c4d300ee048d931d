#!/usr/bin/env node
'use strict';
// The caddy-workerpool command: finds the prebuilt binary that npm
// installed for this platform (one optional dependency per platform, only
// the matching one installed) and runs it with this command's arguments.
//
// It spawns the binary and waits for it without blocking, so that it can
// pass signals on: on POSIX the binary runs in a process group of its own
// and gets each Ctrl-C, SIGTERM or SIGHUP exactly once from here (Caddy
// quits at once, without stopping its workers, on a second SIGINT, and
// npm's `npx` relays the terminal's SIGINT to this process besides the
// one the terminal sends it). The binary's exit code, or the signal that
// ended it, becomes this command's.

const { spawn } = require('node:child_process');
const path = require('node:path');

// The binary's package for each platform npm knows (process.platform,
// process.arch). The binaries are static Go programs, so one Linux
// package serves glibc and musl (Alpine) alike.
const packages = {
  'darwin-arm64': '@caddy-workerpool/darwin-arm64',
  'darwin-x64': '@caddy-workerpool/darwin-x64',
  'linux-arm64': '@caddy-workerpool/linux-arm64',
  'linux-x64': '@caddy-workerpool/linux-x64',
  'win32-arm64': '@caddy-workerpool/win32-arm64',
  'win32-x64': '@caddy-workerpool/win32-x64',
};

function binaryPath() {
  const override = process.env.CADDY_WORKERPOOL_BINARY;
  if (override) {
    return override;
  }
  const platform = `${process.platform}-${process.arch}`;
  const pkg = packages[platform];
  if (!pkg) {
    fail(
      `caddy-workerpool has no prebuilt binary for ${platform}.\n` +
        `Build one with Go (go install github.com/caddy-workerpool/caddy-workerpool/cmd/caddy@latest)\n` +
        `and point CADDY_WORKERPOOL_BINARY at it.`,
    );
  }
  const exe = process.platform === 'win32' ? 'caddy-workerpool.exe' : 'caddy-workerpool';
  try {
    return path.join(path.dirname(require.resolve(`${pkg}/package.json`)), 'bin', exe);
  } catch {
    fail(
      `caddy-workerpool: the package ${pkg}, which holds the binary for ${platform}, is not installed.\n` +
        `npm installs only the platform package that fits the machine it runs on, so this happens when\n` +
        `node_modules was installed on another platform (e.g. on macOS, then copied into a Linux container)\n` +
        `or with optional dependencies left out (--omit=optional, --no-optional).\n` +
        `Fix: install again on this machine, with optional dependencies:\n` +
        `    rm -rf node_modules && npm install\n` +
        `or add it yourself: npm install ${pkg}\n` +
        `or set CADDY_WORKERPOOL_BINARY to the path of a caddy-workerpool binary.`,
    );
  }
}

function fail(message) {
  process.stderr.write(message + '\n');
  process.exit(1);
}

const posix = process.platform !== 'win32';
const child = spawn(binaryPath(), process.argv.slice(2), {
  stdio: 'inherit',
  detached: posix,
  env: { ...process.env, CADDY_WORKERPOOL_NODE: process.execPath },
});

child.on('error', (err) => {
  fail(`caddy-workerpool: cannot run ${child.spawnfile}: ${err.message}`);
});

// One key press can reach this process twice (from the terminal and from
// npm); the same signal again within a second is taken as that one. A
// deliberate second Ctrl-C later still reaches the binary, which then
// quits at once.
const lastSent = {};
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    const now = Date.now();
    if (lastSent[signal] !== undefined && now - lastSent[signal] < 1000) {
      return;
    }
    lastSent[signal] = now;
    // On Windows the console delivers Ctrl-C to the binary itself, and
    // kill() there would end it without a chance to stop its workers.
    if (posix || signal !== 'SIGINT') {
      child.kill(signal);
    }
  });
}

child.on('exit', (code, signal) => {
  if (signal) {
    // End the same way, so that a parent sees the signal too.
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code ?? 1);
});
