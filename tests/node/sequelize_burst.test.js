'use strict';
// Sequelize 6 (dialect mysql, over mysql2): a managed transaction reads the
// user with `lock: true` and writes the new frozen balance, then logs the
// freeze. Sequelize sends a query with bind parameters through mysql2
// execute() (binary protocol) and one without through query() (text): the
// locking read goes as text, `instance.save()`, `Model.update()` and
// `Model.create()` as COM_STMT_PREPARE + COM_STMT_EXECUTE (asserted from the
// wire). A same-user burst: direct, the lock serialises it (some 1205s);
// through thaw every freeze succeeds and the books are exact.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Sequelize, DataTypes } = require('sequelize');
const L = require('./lib');

const USER = 8;
const AMOUNT = 616n;
const BURST = 50;
const WORK_MS = 50;

function models(ep, database) {
  const sequelize = new Sequelize(database, 'root', '', {
    host: ep.host, port: ep.port, dialect: 'mysql', logging: false,
    dialectOptions: { flags: L.NO_IGNORE_SPACE, supportBigNumbers: true, bigNumberStrings: true },
    pool: { max: BURST + 5, min: 0, acquire: 30000 },
  });
  sequelize.addHook('afterConnect', (connection) =>
    connection.promise().query(`SET SESSION innodb_lock_wait_timeout = ${L.LOCK_WAIT_TIMEOUT}`));
  const User = sequelize.define('User', {
    id: { type: DataTypes.BIGINT, primaryKey: true },
    username: DataTypes.STRING(64),
    balance: DataTypes.BIGINT,
    frozen_balance: DataTypes.BIGINT,
    updated_at: DataTypes.DATE,
  }, { tableName: 'users', timestamps: false });
  const Log = sequelize.define('Log', {
    id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
    request_id: DataTypes.STRING(64),
    user_id: DataTypes.BIGINT,
    amount: DataTypes.BIGINT,
    status: DataTypes.STRING(16),
  }, { tableName: 'compute_freeze_logs', timestamps: false });
  return { sequelize, User, Log };
}

class Insufficient extends Error {}

// How many freezes are between their locking read and their last write at
// once: 1 under the row lock, more when thaw unlocked the read.
const overlap = { now: 0, max: 0 };

async function freeze(m, requestId, style) {
  const { sequelize, User, Log } = m;
  try {
    await sequelize.transaction(async (transaction) => {
      const u = await User.findByPk(USER, { lock: true, transaction });
      overlap.max = Math.max(overlap.max, ++overlap.now);
      try {
        const balance = BigInt(u.balance);
        const frozen = BigInt(u.frozen_balance);
        if (balance - frozen < AMOUNT) throw new Insufficient();
        await L.sleep(WORK_MS);
        const next = (frozen + AMOUNT).toString();
        if (style === 'save') {
          u.frozen_balance = next;
          await u.save({ transaction });
        } else {
          await User.update({ balance: balance.toString(), frozen_balance: next }, { where: { id: USER }, transaction });
        }
        await Log.create({ request_id: requestId, user_id: USER, amount: AMOUNT.toString(), status: 'frozen' }, { transaction });
      } finally {
        overlap.now -= 1;
      }
    });
    return { kind: 'ok' };
  } catch (e) {
    if (e instanceof Insufficient) return { kind: 'insufficient' };
    const errno = e.parent?.errno ?? e.original?.errno;
    return { kind: `error:${errno}`, message: e.message };
  }
}

for (const style of ['save', 'Model.update']) {
  test(`[${L.via()}] sequelize managed transaction, lock: true then ${style}(): same-user burst of ${BURST}`, async () => {
    const db = await L.freshDb('seq', L.LEGACY_SCHEMA);
    const tap = await L.wireTap(L.endpoint());
    const m = models(tap, db.name);
    try {
      const initial = AMOUNT * BigInt(BURST) * 2n;
      await db.query('INSERT INTO users (id, username, balance) VALUES (?, ?, ?)', [USER, 'user8', initial.toString()]);
      // open the pool first, so that the burst is not staggered by connection setup
      await Promise.all(Array.from({ length: BURST }, () => m.sequelize.query('SELECT SLEEP(0.2)')));
      overlap.now = 0;
      overlap.max = 0;
      const ids = Array.from({ length: BURST }, (_, i) => `seq-${i}-${L.unique()}`);
      const outcomes = await Promise.all(ids.map((rid) => freeze(m, rid, style)));
      const t = L.tally(outcomes);
      console.log(`${L.via()} ${style}: ${JSON.stringify(t)}, at most ${overlap.max} between read and write`);
      const errors = [...new Set(outcomes.filter((o) => o.message).map((o) => o.message))].slice(0, 3);

      // what Sequelize put on the wire for one freeze (the first connection that committed one)
      const c = tap.log.find((e) => e.cmd === 'STMT_PREPARE' && e.sql.startsWith('INSERT INTO `compute_freeze_logs`'))?.conn;
      console.log(`wire of one connection:\n${tap.summary().split('\n').filter((l) => l.startsWith(`#${c} `)).slice(0, 12).join('\n')}`);
      const ofConn = tap.log.filter((e) => e.conn === c);
      assert.ok(ofConn.some((e) => e.cmd === 'QUERY' && /FOR UPDATE/.test(e.sql)), 'the locking read is not a text query');
      assert.ok(ofConn.some((e) => e.cmd === 'STMT_PREPARE' && /^UPDATE `users` SET/.test(e.sql)), 'the UPDATE is not prepared');
      assert.ok(ofConn.some((e) => e.cmd === 'STMT_EXECUTE'), 'no COM_STMT_EXECUTE');

      const b = await L.books(db, USER);
      const okIds = new Set(ids.filter((_, i) => outcomes[i].kind === 'ok'));
      assert.equal(b.frozen, b.logSum, 'frozen_balance != sum of freeze logs');
      assert.deepEqual(b.logIds, okIds, 'freeze logs do not match the successful requests');
      assert.equal(b.balance, initial);
      if (L.via() === 'direct') {
        assert.equal(overlap.max, 1, 'direct, the row lock serialises the freezes');
        assert.ok((t['error:1205'] || 0) >= 1, `no 1205 direct: the burst does not queue (${JSON.stringify(t)})`);
        assert.equal((t.ok || 0) + (t['error:1205'] || 0), BURST, `${JSON.stringify(t)} ${errors}`);
      } else {
        assert.ok(overlap.max > 1, `the locking read was not unlocked (overlap ${overlap.max})`);
        assert.equal(t.ok, BURST, `${JSON.stringify(t)} ${errors}`);
        assert.equal(b.frozen, AMOUNT * BigInt(BURST));
      }
    } finally {
      await m.sequelize.close();
      await tap.close();
      await db.drop();
    }
  });
}
