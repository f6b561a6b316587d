'use strict';

// Finds a Python interpreter that actually runs, the one way `make` (the virtualenv's
// Python) and infra/compile-bytecode.js (the Lambda runtime's 3.12) both use: on PATH
// first, then pyenv's installed versions. pyenv's shims fail unless their version is
// selected (`pyenv: python3.12: command not found`), so each candidate is run, and
// pyenv's real interpreters under $(pyenv root)/versions are tried after PATH.
//
//   node infra/find-python.js 3.12    exactly Python 3.12
//   node infra/find-python.js 3.11+   3.11 or newer: python3 if it qualifies, then
//                                     python3.11, python3.12, ... on PATH, then pyenv's
//
// Prints the interpreter's real path (sys.executable), or nothing with exit status 1.
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

// Newest minor version tried by name on PATH for a "3.N+" request.
const NEWEST_MINOR = 20;

function parseSpec(spec) {
  const match = /^3\.(\d+)(\+?)$/.exec(String(spec).trim());
  if (!match) throw new Error(`not a Python version: ${spec} (say 3.12 or 3.11+)`);
  return { minor: Number(match[1]), orNewer: match[2] === '+' };
}

function accepts(spec, minor) {
  return spec.orNewer ? minor >= spec.minor : minor === spec.minor;
}

// { executable, minor } if the interpreter runs, else null.
function probe(command, env) {
  try {
    const out = execFileSync(
      command,
      ['-c', 'import sys; print(sys.executable); print(sys.version_info[0], sys.version_info[1])'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], env, timeout: 10000 }
    );
    const [executable, version] = out.trim().split('\n');
    const [major, minor] = version.split(' ').map(Number);
    return major === 3 && executable ? { executable, minor } : null;
  } catch (error) {
    return null;
  }
}

function pyenvRoot(env) {
  if (env.PYENV_ROOT) return env.PYENV_ROOT;
  try {
    return execFileSync('pyenv', ['root'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      env,
      timeout: 10000,
    }).trim();
  } catch (error) {
    return path.join(os.homedir(), '.pyenv');
  }
}

// pyenv's installed CPython versions, [{ minor, patch, bin }], oldest first.
function pyenvVersions(env) {
  const root = path.join(pyenvRoot(env), 'versions');
  let names = [];
  try {
    names = fs.readdirSync(root);
  } catch (error) {
    return [];
  }
  const versions = [];
  for (const name of names) {
    const match = /^3\.(\d+)\.(\d+)$/.exec(name); // CPython releases, not 3.13t or pypy
    if (!match) continue;
    versions.push({
      minor: Number(match[1]),
      patch: Number(match[2]),
      bin: path.join(root, name, 'bin', `python3.${match[1]}`),
    });
  }
  return versions.sort((a, b) => a.minor - b.minor || a.patch - b.patch);
}

function candidates(spec, env) {
  const onPath = [];
  if (spec.orNewer) {
    onPath.push('python3');
    for (let minor = spec.minor; minor <= NEWEST_MINOR; minor += 1) onPath.push(`python3.${minor}`);
  } else {
    onPath.push(`python3.${spec.minor}`);
  }
  // The newest patch release of each wanted minor version, older minors first.
  const inPyenv = pyenvVersions(env)
    .filter((v) => accepts(spec, v.minor))
    .reverse()
    .filter((v, i, all) => all.findIndex((w) => w.minor === v.minor) === i)
    .reverse()
    .map((v) => v.bin);
  return [...onPath, ...inPyenv];
}

// The real path of the first interpreter that runs and matches `spec`, or null.
function findPython(spec, env = process.env) {
  const wanted = parseSpec(spec);
  for (const command of candidates(wanted, env)) {
    const found = probe(command, env);
    if (found && accepts(wanted, found.minor)) return found.executable;
  }
  return null;
}

module.exports = { findPython };

if (require.main === module) {
  const found = findPython(process.argv[2] || '3.11+');
  if (found) process.stdout.write(`${found}\n`);
  process.exit(found ? 0 : 1);
}
