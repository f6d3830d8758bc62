'use strict';
// The lost update of issue 9, with the `mariadb` connector, whose execute()
// pipelines COM_STMT_PREPARE and COM_STMT_EXECUTE with statement id
// 0xFFFFFFFF ("the statement just prepared").
//
// Two sessions freeze for the same user, interleaved:
//   A: BEGIN; SELECT ... FOR UPDATE            (through thaw: unlocked)
//   B: BEGIN; SELECT ... FOR UPDATE            direct: blocks on A's lock
//   A: prepared UPDATE users SET balance=?, frozen_balance=? WHERE id=?; log; COMMIT
//   B: the same prepared absolute UPDATE, computed from what B read; log; COMMIT
// Direct, B reads after A's commit and the books add up. Through thaw B read
// the row before A wrote it: its absolute write is stale, and passing it on
// as written loses A's freeze. The app retries 1213 (as apps do), so thaw
// may refuse B (validation) or plan it (delta); it must never lose A's 100.
const test = require('node:test');
const assert = require('node:assert/strict');
const mariadb = require('mariadb');
const L = require('./lib');

const USER = 8;
const INITIAL = 10000n;
const SELECT = 'SELECT id, balance, frozen_balance FROM users WHERE id = 8 FOR UPDATE';
const SELECT_P = 'SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE';
const UPDATE_P = 'UPDATE users SET balance=?, frozen_balance=? WHERE id=?';
const LOG_P = 'INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (?, ?, ?, ?)';

async function session(ep, db) {
  const c = await mariadb.createConnection({
    host: ep.host, port: ep.port, user: 'root', password: '', database: db,
    bigIntAsNumber: false, decimalAsNumber: false, pipelining: true,
  });
  await c.query(`SET SESSION innodb_lock_wait_timeout = ${L.LOCK_WAIT_TIMEOUT}`);
  // The connector always sends CLIENT_IGNORE_SPACE (sql_mode IGNORE_SPACE),
  // under which thaw plans nothing: take it out, so that this file tests
  // prepared statements (driver_session.test.js covers the default session).
  await c.query("SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(@@SESSION.sql_mode, 'IGNORE_SPACE', ''))");
  return c;
}

async function read(c, mode) {
  const rows = mode === 'text' ? await c.query(SELECT) : await c.execute(SELECT_P, [USER]);
  return { balance: BigInt(rows[0].balance), frozen: BigInt(rows[0].frozen_balance) };
}

async function write(c, seen, amount, rid) {
  await c.execute(UPDATE_P, [seen.balance.toString(), (seen.frozen + amount).toString(), USER]);
  await c.execute(LOG_P, [rid, USER, amount.toString(), 'frozen']);
  await c.query('COMMIT');
}

// The app's deadlock retry: the whole transaction again, at most 5 times.
async function withRetry(c, fn, errors) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      await c.query('ROLLBACK').catch(() => {});
      errors.push({ errno: e.errno, message: e.message });
      if (e.errno !== 1213 || attempt >= 5) throw e;
    }
  }
}

async function scenario(mode) {
  const db = await L.freshDb('lost', L.LEGACY_SCHEMA);
  const tap = await L.wireTap(L.endpoint());
  const a = await session(tap, db.name);
  const b = await session(tap, db.name);
  const out = { aErrors: [], bErrors: [], bBlocked: null, bSaw: null };
  try {
    await db.query('INSERT INTO users (id, username, balance) VALUES (8, ?, ?)', ['user8', INITIAL.toString()]);
    let bRead;
    await withRetry(a, async (attempt) => {
      await a.query('BEGIN');
      const seen = await read(a, mode);
      if (attempt === 1) {
        // B reads while A's transaction is open (direct: B waits on A's lock)
        await b.query('BEGIN');
        bRead = read(b, mode);
        bRead.catch(() => {});
        const first = await Promise.race([bRead.then(() => 'read'), L.sleep(500).then(() => 'blocked')]);
        out.bBlocked = first === 'blocked';
      }
      await write(a, seen, 100n, 'req-a');
    }, out.aErrors);
    await withRetry(b, async (attempt) => {
      let seen;
      if (attempt === 1) {
        seen = await bRead;
      } else {
        await b.query('BEGIN');
        seen = await read(b, mode);
      }
      if (attempt === 1) out.bSaw = seen;
      await write(b, seen, 200n, 'req-b');
    }, out.bErrors);
    out.books = await L.books(db, USER);
    out.wire = tap.summary();
    out.log = tap.log;
    return out;
  } finally {
    await a.end().catch(() => {});
    await b.end().catch(() => {});
    await tap.close();
    await db.drop();
  }
}

for (const mode of ['text', 'prepared']) {
  test(`[${L.via()}] mariadb execute(): stale prepared absolute write after a ${mode} locking read`, async (t) => {
    const r = await scenario(mode);
    console.log(`${L.via()} read=${mode}: B blocked=${r.bBlocked} B saw frozen=${r.bSaw.frozen} ` +
      `A errors=${JSON.stringify(r.aErrors)} B errors=${JSON.stringify(r.bErrors)}`);
    console.log(`wire (client -> ${L.via()}):\n${r.wire}`);

    await t.test('the connector pipelines PREPARE + EXECUTE(0xFFFFFFFF) for the UPDATE', () => {
      const i = r.log.findIndex((e) => e.cmd === 'STMT_PREPARE' && e.sql.startsWith('UPDATE users'));
      assert.ok(i >= 0, 'no COM_STMT_PREPARE of the UPDATE on the wire');
      assert.equal(r.log[i + 1].cmd, 'STMT_EXECUTE');
      assert.equal(r.log[i + 1].stmtId, 0xffffffff);
    });

    await t.test('ledger exact: both freezes counted once', () => {
      assert.equal(r.books.frozen, 300n, `frozen_balance ${r.books.frozen}, expected 100 + 200 (a freeze was lost)`);
      assert.equal(r.books.balance, INITIAL);
      assert.equal(r.books.logSum, 300n);
      assert.deepEqual(r.books.logIds, new Set(['req-a', 'req-b']));
      assert.deepEqual(r.aErrors, [], 'A never conflicts');
    });

    if (L.via() === 'direct') {
      await t.test('direct reference: B waited for A and read its commit', () => {
        assert.equal(r.bBlocked, true);
        assert.equal(r.bSaw.frozen, 100n);
        assert.deepEqual(r.bErrors, []);
      });
    } else {
      await t.test('thaw: B read unlocked (stale) and its prepared write was planned as a delta, no 1213', () => {
        assert.equal(r.bBlocked, false, 'B waited on the row lock: the locking read was not unlocked');
        assert.equal(r.bSaw.frozen, 0n);
        assert.deepEqual(r.bErrors, [], 'thaw refused B instead of rewriting its prepared UPDATE');
      });
    }
  });
}
