'use strict';
// Load generator: the legacy freeze flow over Node mysql2, as text queries
// (query(): the driver interpolates) or as server-side prepared statements
// (execute(): COM_STMT_PREPARE once per connection, then COM_STMT_EXECUTE).
// The same flow and output as bench/prepared_loadgen.py, for bench/prepared.sh;
// not a test. Run with NODE_PATH=tests/node/node_modules.
//
//   node bench/prepared_loadgen.js --port P [--prepared] [--users N] [--requests N] [--work-ms MS] [--bursts K]
//
// --bursts K runs the burst K times on the same connections, as a pooled app
// does: the first burst is cold (every connection prepares its statements),
// the later ones warm (mysql2 keeps each connection's prepared statements).
// REQUESTS concurrent requests, one connection each, for one user (--users 1:
// the burst) or spread over several (no contention: each protocol's own cost):
//   BEGIN
//   SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE
//   (work_ms of app work; the app checks balance - frozen_balance >= amount)
//   INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (?, ?, ?, 'frozen')
//   UPDATE users SET frozen_balance = ?, updated_at = NOW() WHERE id = ?   -- absolute
//   COMMIT
const mysql = require('mysql2/promise');
const crypto = require('node:crypto');

function args(argv) {
  const a = { host: '127.0.0.1', port: 0, setupHost: '127.0.0.1', setupPort: 3306, prepared: false, users: 1,
    requests: 100, workMs: 50, bursts: 1, amount: '5.00', balance: '1000.00', lockWaitTimeout: 2 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => argv[++i];
    if (k === '--host') a.host = v();
    else if (k === '--port') a.port = Number(v());
    else if (k === '--setup-host') a.setupHost = v();
    else if (k === '--setup-port') a.setupPort = Number(v());
    else if (k === '--prepared') a.prepared = true;
    else if (k === '--users') a.users = Number(v());
    else if (k === '--requests') a.requests = Number(v());
    else if (k === '--work-ms') a.workMs = Number(v());
    else if (k === '--bursts') a.bursts = Number(v());
    else if (k === '--balance') a.balance = v();
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.port) throw new Error('--port is required');
  return a;
}

const SCHEMA = [
  `CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64),
    balance DECIMAL(18,2) NOT NULL DEFAULT 0, frozen_balance DECIMAL(18,2) NOT NULL DEFAULT 0,
    updated_at DATETIME NULL)`,
  `CREATE TABLE compute_freeze_logs (id BIGINT PRIMARY KEY AUTO_INCREMENT,
    request_id VARCHAR(64) NOT NULL UNIQUE, user_id BIGINT NOT NULL,
    amount DECIMAL(18,2) NOT NULL, status VARCHAR(16) NOT NULL, created_at DATETIME
    DEFAULT CURRENT_TIMESTAMP)`,
];

const connect = (host, port, database) =>
  mysql.createConnection({ host, port, user: 'root', password: '', database, decimalNumbers: false });

// cents as BigInt, from a DECIMAL(18,2) string
const cents = (s) => {
  const [w, f = ''] = String(s).split('.');
  return BigInt(w) * 100n + BigInt((f + '00').slice(0, 2)) * (w.startsWith('-') ? -1n : 1n);
};
const decimal = (c) => `${c / 100n}.${String(c % 100n).padStart(2, '0')}`;

async function freeze(c, prepared, amount, workMs, uid) {
  const run = (sql, params) => (prepared ? c.execute(sql, params) : c.query(sql, params));
  try {
    await c.query('BEGIN');
    const [[u]] = await run('SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE', [uid]);
    await new Promise((r) => setTimeout(r, workMs));
    const frozen = cents(u.frozen_balance);
    if (cents(u.balance) - frozen < amount) {
      await c.query('ROLLBACK');
      return 'insufficient';
    }
    await run("INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (?, ?, ?, 'frozen')",
      [crypto.randomUUID().replaceAll('-', ''), uid, decimal(amount)]);
    await run('UPDATE users SET frozen_balance = ?, updated_at = NOW() WHERE id = ?', [decimal(frozen + amount), uid]);
    await c.query('COMMIT');
    return 'ok';
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {});
    return e.errno === 1644 ? 'insufficient' : String(e.errno ?? e.code);
  }
}

async function main() {
  const a = args(process.argv.slice(2));
  const db = `bench_ps_${crypto.randomBytes(4).toString('hex')}`;
  const s = await connect(a.setupHost, a.setupPort);
  await s.query(`CREATE DATABASE ${db}`);
  await s.query(`USE ${db}`);
  for (const t of SCHEMA) await s.query(t);
  for (let uid = 1; uid <= a.users; uid++) {
    await s.query('INSERT INTO users (id, username, balance) VALUES (?, ?, ?)', [uid, `u${uid}`, a.balance]);
  }
  await s.end();

  const conns = await Promise.all(Array.from({ length: a.requests }, () => connect(a.host, a.port, db)));
  await Promise.all(conns.map((c) => c.query(`SET SESSION innodb_lock_wait_timeout = ${a.lockWaitTimeout}`)));
  const amount = cents(a.amount);
  const bursts = [];
  for (let b = 0; b < a.bursts; b++) {
    const t0 = process.hrtime.bigint();
    const results = await Promise.all(conns.map((c, i) => freeze(c, a.prepared, amount, a.workMs, 1 + (i % a.users))));
    bursts.push({ results, seconds: Number(process.hrtime.bigint() - t0) / 1e9 });
  }
  await Promise.all(conns.map((c) => c.end().catch(() => {})));

  const v = await connect(a.setupHost, a.setupPort, db);
  const [[{ frozen }]] = await v.query('SELECT CAST(SUM(frozen_balance) AS CHAR) AS frozen FROM users');
  const [[{ logged, n }]] = await v.query(
    'SELECT CAST(COALESCE(SUM(amount), 0) AS CHAR) AS logged, COUNT(*) AS n FROM compute_freeze_logs');
  await v.query(`DROP DATABASE ${db}`);
  await v.end();

  const okAll = bursts.reduce((s, b) => s + b.results.filter((r) => r === 'ok').length, 0);
  // one line per burst; the books are checked over all of them
  bursts.forEach(({ results, seconds }, b) => {
    const ok = results.filter((r) => r === 'ok').length;
    const errors = {};
    for (const r of results) if (r !== 'ok' && r !== 'insufficient') errors[r] = (errors[r] || 0) + 1;
    console.log(JSON.stringify({
      mode: a.prepared ? 'prepared' : 'text',
      client: 'mysql2',
      burst: b + 1,
      requests: a.requests,
      succeeded: ok,
      insufficient: results.filter((r) => r === 'insufficient').length,
      errors,
      seconds: Math.round(seconds * 1000) / 1000,
      successful_rps: Math.round((ok / seconds) * 10) / 10,
      books_ok: cents(frozen) === cents(logged) && Number(n) === okAll,
    }));
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
