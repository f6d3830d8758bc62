'use strict';
// The seed app's check-then-freeze flow written with mysql2 execute() (binary
// protocol for every statement with parameters), as a same-user burst.
// Direct, the prepared SELECT ... FOR UPDATE queues the burst on the row lock
// and some requests die with 1205 (asserted: the test exercises the problem).
// Through thaw (issue 9) the prepared read is unlocked and the prepared
// absolute UPDATE becomes a guarded delta: every request succeeds, no freeze
// overdraws, and the books are exact.
const test = require('node:test');
const assert = require('node:assert/strict');
const L = require('./lib');

const USER = 8;
const AMOUNT = 616n;
const WORK_MS = 50;

// How many requests are between their locking read and their COMMIT at
// once. The row lock makes it 1 (direct, or a thaw that keeps the lock);
// more proves that the prepared read ran unlocked. (thaw's own 1205 retries
// can make a locked burst succeed too, just serially: 100/100 alone proves
// nothing.)
const overlap = { now: 0, max: 0 };

// One request: BEGIN; prepared locking read; check in JS; prepared absolute
// UPDATE; prepared INSERT of the log row; COMMIT. No retry loop: the legacy
// app has none.
async function checkAndFreeze(c, requestId, amount, proto) {
  // binary: execute() (COM_STMT_PREPARE/EXECUTE); text: query() interpolates
  const run = (sql, args) => (proto === 'text' ? c.query(sql, args) : c.execute(sql, args));
  await c.query('BEGIN');
  let inside = false;
  try {
    const [[u]] = await run('SELECT id, balance, frozen_balance FROM users WHERE id=? FOR UPDATE', [USER]);
    inside = true;
    overlap.max = Math.max(overlap.max, ++overlap.now);
    const balance = BigInt(u.balance);
    const frozen = BigInt(u.frozen_balance);
    if (balance - frozen < amount) {
      overlap.now -= 1; inside = false;
      await c.query('ROLLBACK');
      return { kind: 'insufficient', source: 'app' };
    }
    await L.sleep(WORK_MS);
    await run('UPDATE users SET balance=?, frozen_balance=? WHERE id=?',
      [balance.toString(), (frozen + amount).toString(), USER]);
    await run('INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (?, ?, ?, ?)',
      [requestId, USER, amount.toString(), 'frozen']);
    overlap.now -= 1; inside = false; // the write holds the lock now; COMMIT releases it
    await c.query('COMMIT');
    return { kind: 'ok' };
  } catch (e) {
    if (inside) { overlap.now -= 1; inside = false; }
    await c.query('ROLLBACK').catch(() => {});
    // thaw answers a guarded write that would overdraw with 1644 (rules/billing.yaml)
    if (e.errno === 1644) return { kind: 'insufficient', source: 'db', message: e.message };
    return { kind: `error:${e.errno}`, message: e.message };
  }
}

async function burst(db, n, amount, proto = 'binary') {
  const ep = L.endpoint();
  // connections first, so that the burst is not staggered by connection setup
  const conns = await Promise.all(Array.from({ length: n }, () => L.connect(ep, db.name)));
  const ids = conns.map((_, i) => `req-${i}-${L.unique()}`);
  overlap.now = 0;
  overlap.max = 0;
  try {
    const t0 = Date.now();
    const outcomes = await Promise.all(conns.map((c, i) => checkAndFreeze(c, ids[i], amount, proto)));
    return { ids, outcomes, ms: Date.now() - t0, overlap: overlap.max };
  } finally {
    await Promise.all(conns.map((c) => c.end().catch(() => {})));
  }
}

function errorSummary(outcomes) {
  const seen = {};
  for (const o of outcomes) if (o.kind.startsWith('error')) seen[o.message] = (seen[o.message] || 0) + 1;
  return JSON.stringify(seen).slice(0, 1500);
}

async function assertBooks(db, ids, outcomes, preFrozen = 0n) {
  const b = await L.books(db, USER);
  const okIds = new Set(ids.filter((_, i) => outcomes[i].kind === 'ok'));
  assert.equal(b.frozen - preFrozen, b.logSum, 'frozen_balance != sum of freeze logs');
  assert.deepEqual(b.logIds, okIds, 'freeze logs do not match the successful requests');
  assert.ok(b.balance - b.frozen >= 0n && b.frozen >= 0n, `overdrawn: ${b.balance} ${b.frozen}`);
  return b;
}

function assertOverlap(most) {
  if (L.via() === 'direct') {
    assert.equal(most, 1, 'direct, the row lock serialises read..commit');
  } else {
    assert.ok(most > 1, `through thaw the prepared FOR UPDATE still serialised the burst (overlap ${most}): not unlocked`);
  }
}

// text: the control. The same flow over the text protocol is what thaw plans
// today; it shows these assertions can pass.
async function burstCase(proto) {
  const BURST = 100;
  const initial = AMOUNT * BigInt(BURST) * 2n;
  const db = await L.freshDb('burst', L.LEGACY_SCHEMA);
  try {
    await db.query('INSERT INTO users (id, username, balance) VALUES (?, ?, ?)', [USER, 'user8', initial.toString()]);
    const { ids, outcomes, ms, overlap: most } = await burst(db, BURST, AMOUNT, proto);
    const t = L.tally(outcomes);
    console.log(`${L.via()} ${proto} burst: ${JSON.stringify(t)} in ${ms} ms, at most ${most} between read and commit`);
    assertOverlap(most);
    if (L.via() === 'direct') {
      assert.ok((t['error:1205'] || 0) >= 1, `no 1205 direct: the burst does not queue on the lock (${JSON.stringify(t)})`);
      assert.equal((t.ok || 0) + (t['error:1205'] || 0), BURST, `${JSON.stringify(t)} ${errorSummary(outcomes)}`);
      await assertBooks(db, ids, outcomes);
    } else {
      assert.equal(t.ok, BURST, `${JSON.stringify(t)} ${errorSummary(outcomes)}`);
      const b = await assertBooks(db, ids, outcomes);
      assert.equal(b.frozen, AMOUNT * BigInt(BURST));
      assert.equal(b.balance, initial);
    }
  } finally {
    await db.drop();
  }
}

for (const proto of ['binary', 'text']) {
  test(`[${L.via()}] same-user burst of 100 check-then-freeze requests, ${proto} protocol`, () => burstCase(proto));
}

test(`[${L.via()}] insufficient funds: exactly K of N prepared freezes succeed`, async () => {
  const K = 7;
  const N = 30;
  const preFrozen = 333n; // the app's absolute writes start from non-zero
  const initial = AMOUNT * BigInt(K) + preFrozen;
  const db = await L.freshDb('funds', L.LEGACY_SCHEMA);
  try {
    await db.query('INSERT INTO users (id, username, balance, frozen_balance) VALUES (?, ?, ?, ?)',
      [USER, 'user8', initial.toString(), preFrozen.toString()]);
    const { ids, outcomes, overlap: most } = await burst(db, N, AMOUNT);
    const t = L.tally(outcomes);
    const bySource = { app: 0, db: 0 };
    for (const o of outcomes) if (o.kind === 'insufficient') bySource[o.source] += 1;
    console.log(`${L.via()} funds: ${JSON.stringify(t)} rejected by ${JSON.stringify(bySource)}, overlap ${most}`);
    assertOverlap(most);
    for (const o of outcomes) {
      if (o.source === 'db') assert.match(o.message, /insufficient balance/i);
    }
    const b = await assertBooks(db, ids, outcomes, preFrozen);
    if (L.via() === 'direct') {
      // serialised by the lock: nobody overdraws; late ones may time out
      assert.equal((t.ok || 0) + (t.insufficient || 0) + (t['error:1205'] || 0), N, errorSummary(outcomes));
      assert.ok((t.ok || 0) <= K);
    } else {
      assert.equal(t.ok, K, `${JSON.stringify(t)} ${errorSummary(outcomes)}`);
      assert.equal(t.insufficient, N - K, `${JSON.stringify(t)} ${errorSummary(outcomes)}`);
      assert.equal(b.frozen, preFrozen + AMOUNT * BigInt(K));
      assert.equal(b.balance, initial);
    }
  } finally {
    await db.drop();
  }
});
