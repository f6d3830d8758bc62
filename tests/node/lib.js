'use strict';
// Helpers shared by the Node driver tests. tests/python/prepared/test_node.py
// starts thaw and runs each file with:
//   VIA          "direct" or "thaw": the endpoint the test file exercises
//   THAW_HOST/THAW_PORT, DIRECT_HOST/DIRECT_PORT: the two endpoints
// MariaDB must answer (root, empty password): nothing is ever skipped.
const net = require('node:net');
const crypto = require('node:crypto');
const mysql = require('mysql2/promise');

const env = process.env;
const DIRECT = { host: env.DIRECT_HOST || '127.0.0.1', port: Number(env.DIRECT_PORT || 3306) };
// Per-session lock wait timeout of every app connection: a direct burst then
// shows its 1205s quickly, and no global server variable is touched.
const LOCK_WAIT_TIMEOUT = 2;

function via() {
  const v = env.VIA || 'thaw';
  if (v !== 'direct' && v !== 'thaw') throw new Error(`VIA must be direct or thaw, got ${v}`);
  return v;
}

function endpoint(name = via()) {
  if (name === 'direct') return DIRECT;
  if (!env.THAW_PORT) {
    throw new Error('THAW_PORT is not set: run these files through tests/python/prepared/test_node.py');
  }
  return { host: env.THAW_HOST || '127.0.0.1', port: Number(env.THAW_PORT) };
}

const unique = () => crypto.randomBytes(5).toString('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// mysql2 (and the mariadb connector) set CLIENT_IGNORE_SPACE in the
// handshake by default, so the server adds IGNORE_SPACE to the session's
// sql_mode, and thaw plans nothing in such a session (it cannot be sure to
// read function calls as the server does). These tests are about prepared
// statements, so they drop the flag; driver_session.test.js covers the
// drivers' default sessions.
const NO_IGNORE_SPACE = '-IGNORE_SPACE';

// mysql2 options that keep every value exact: big integers and DECIMAL as
// strings, temporal values as the server's text (no time zone conversion).
function mysql2Opts(ep, database, extra = {}) {
  return {
    host: ep.host, port: ep.port, user: 'root', password: '', database,
    supportBigNumbers: true, bigNumberStrings: true, dateStrings: true,
    connectTimeout: 10000, flags: NO_IGNORE_SPACE, ...extra,
  };
}

async function connect(ep, database, extra) {
  const c = await mysql.createConnection(mysql2Opts(ep, database, extra));
  await c.query(`SET SESSION innodb_lock_wait_timeout = ${LOCK_WAIT_TIMEOUT}`);
  return c;
}

// A database of the test's own, straight on MariaDB; drop() at the end.
async function freshDb(prefix, ddl = []) {
  const name = `thaw_node_${prefix}_${unique()}`;
  const c = await mysql.createConnection(mysql2Opts(DIRECT));
  try {
    await c.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci`);
    await c.query(`USE \`${name}\``);
    for (const sql of ddl) await c.query(sql);
  } finally {
    await c.end();
  }
  return {
    name,
    async query(sql, args) {
      const a = await mysql.createConnection(mysql2Opts(DIRECT, name));
      try { return (await a.query(sql, args))[0]; } finally { await a.end(); }
    },
    async drop() {
      const a = await mysql.createConnection(mysql2Opts(DIRECT));
      try { await a.query(`DROP DATABASE IF EXISTS \`${name}\``); } finally { await a.end(); }
    },
  };
}

// The legacy billing schema (tests/python/legacy/app.py, BIGINT variant).
const LEGACY_SCHEMA = [
  `CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64),
    balance BIGINT NOT NULL DEFAULT 0, frozen_balance BIGINT NOT NULL DEFAULT 0,
    updated_at DATETIME NULL)`,
  `CREATE TABLE compute_freeze_logs (id BIGINT PRIMARY KEY AUTO_INCREMENT,
    request_id VARCHAR(64) NOT NULL UNIQUE, user_id BIGINT NOT NULL,
    amount BIGINT NOT NULL, status VARCHAR(16) NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP)`,
];

async function books(db, user) {
  const [u] = await db.query('SELECT balance, frozen_balance FROM users WHERE id = ?', [user]);
  const logs = await db.query('SELECT request_id, amount FROM compute_freeze_logs WHERE user_id = ?', [user]);
  return {
    balance: BigInt(u.balance), frozen: BigInt(u.frozen_balance),
    logIds: new Set(logs.map((r) => r.request_id)),
    logSum: logs.reduce((s, r) => s + BigInt(r.amount), 0n),
  };
}

function tally(outcomes) {
  const t = {};
  for (const o of outcomes) t[o.kind] = (t[o.kind] || 0) + 1;
  return t;
}

// ------------------------------------------------------------------ wire tap
// A TCP relay in front of an endpoint that notes every command the client
// sends (packets with sequence id 0): what a driver really puts on the wire.
const COMMANDS = {
  0x01: 'QUIT', 0x02: 'INIT_DB', 0x03: 'QUERY', 0x0e: 'PING', 0x11: 'CHANGE_USER',
  0x16: 'STMT_PREPARE', 0x17: 'STMT_EXECUTE', 0x18: 'STMT_SEND_LONG_DATA',
  0x19: 'STMT_CLOSE', 0x1a: 'STMT_RESET', 0x1b: 'SET_OPTION', 0x1c: 'STMT_FETCH',
  0x1f: 'RESET_CONNECTION', 0xfa: 'STMT_BULK_EXECUTE',
};

async function wireTap(target) {
  const log = [];
  const sockets = new Set();
  let conns = 0;
  const server = net.createServer((client) => {
    const up = net.connect(target.port, target.host);
    const conn = conns++;
    sockets.add(client); sockets.add(up);
    let buf = Buffer.alloc(0);
    client.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4) {
        const len = buf.readUIntLE(0, 3);
        if (buf.length < 4 + len) break;
        const seq = buf[3];
        const p = buf.subarray(4, 4 + len);
        if (seq === 0 && len > 0) {
          const e = { conn, cmd: COMMANDS[p[0]] || `0x${p[0].toString(16)}` };
          if (p[0] === 0x03 || p[0] === 0x16) e.sql = p.subarray(1).toString('utf8');
          if (p[0] >= 0x17 && p[0] <= 0x1c && len >= 5) e.stmtId = p.readUInt32LE(1);
          if (p[0] === 0x17 && len >= 6) e.flags = p[5];
          log.push(e);
        }
        buf = buf.subarray(4 + len);
      }
      up.write(d);
    });
    up.on('data', (d) => client.write(d));
    const end = () => { client.destroy(); up.destroy(); };
    client.on('close', end); up.on('close', end);
    client.on('error', end); up.on('error', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    host: '127.0.0.1', port: server.address().port, log,
    close() { for (const s of sockets) s.destroy(); return new Promise((r) => server.close(r)); },
    // one line per command, for the test output
    summary() {
      return log.map((e) => `#${e.conn} ${e.cmd}${e.stmtId !== undefined ? ` id=0x${e.stmtId.toString(16)}` : ''}` +
        `${e.sql ? ` ${e.sql.replace(/\s+/g, ' ').slice(0, 200)}` : ''}`).join('\n');
    },
  };
}

module.exports = {
  NO_IGNORE_SPACE, DIRECT, LOCK_WAIT_TIMEOUT, via, endpoint, unique, sleep, mysql2Opts, connect, freshDb,
  LEGACY_SCHEMA, books, tally, wireTap,
};
