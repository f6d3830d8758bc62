'use strict';
// Differential fidelity of the binary protocol with mysql2 execute(): the
// same steps on a fresh database direct and on one through the endpoint under
// test must give the same transcript: rows, column definitions, OK packet
// fields (affectedRows, insertId, info, changedRows, serverStatus,
// warningStatus) and errors. VIA=direct compares direct with direct (proves
// the transcript is deterministic); VIA=thaw compares direct with thaw.
//
// prep_typed is governed (test_node.py adds a rule for it): the last steps
// run a prepared locking read and a prepared UPDATE inside a transaction,
// the shapes issue 9 rewrites, so their results must not change either.
const test = require('node:test');
const assert = require('node:assert/strict');
const { TypedParameter: T } = require('mysql2');
const L = require('./lib');

const DDL = [`CREATE TABLE prep_typed (id INT PRIMARY KEY AUTO_INCREMENT,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT,
  i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, f FLOAT, d DOUBLE,
  dc DECIMAL(65,30), vc VARCHAR(255), vb VARBINARY(255), dt DATE, dtm DATETIME(6),
  tm TIME(6), n INT NULL)`];
const COLS = 'ti, tu, si, su, mi, i, iu, bi, bu, f, d, dc, vc, vb, dt, dtm, tm, n';
const INSERT = `INSERT INTO prep_typed (${COLS}) VALUES (${COLS.split(',').map(() => '?').join(', ')})`;
const NASTY = 'it\'s "quoted" \\ back\\slash \0 NUL ünïcødé 😀 \'\'';

const MIN = [T.TINY(-128), T.TINY.unsigned(0), T.SHORT(-32768), T.SHORT.unsigned(0), T.INT24(-8388608),
  T.LONG(-2147483648), T.LONG.unsigned(0), T.LONGLONG(-9223372036854775808n), T.LONGLONG.unsigned(0n),
  T.FLOAT(-1.17549435e-38), T.DOUBLE(-2.2250738585072014e-308),
  '-99999999999999999999999999999999999.999999999999999999999999999999', '', Buffer.alloc(0),
  T.DATE('1000-01-01'), T.DATETIME('1000-01-01 00:00:00.000000'), T.TIME('-838:59:59'), null];
const MAX = [T.TINY(127), T.TINY.unsigned(255), T.SHORT(32767), T.SHORT.unsigned(65535), T.INT24(8388607),
  T.LONG(2147483647), T.LONG.unsigned(4294967295), T.LONGLONG(9223372036854775807n),
  T.LONGLONG.unsigned(18446744073709551615n), T.FLOAT(3.40282e38), T.DOUBLE(1.7976931348623157e308),
  T.NEWDECIMAL('99999999999999999999999999999999999.999999999999999999999999999999'), NASTY,
  Buffer.from([0, 1, 0x27, 0x5c, 0x22, 0xff, 0x00]), T.DATE('9999-12-31'),
  T.DATETIME('9999-12-31 23:59:59.999999'), T.TIME('838:59:59.000000'), T.LONG(1)];
// the JS types mysql2 infers itself: number -> DOUBLE, boolean -> TINY,
// string -> VAR_STRING, bigint -> string, Date -> DATETIME, null -> NULL
const INFERRED = [true, false, '-32768', 7, 1.5, 2 ** 31 - 1, '4294967295', 2n ** 62n, '18446744073709551615',
  0.1, 1e-300, '0.000000000000000000000000000001', 'é\n\t\r\x1a', Buffer.from('\u00e9', 'latin1'),
  '2024-02-29', new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789)), '-00:00:01.500000', T.NULL()];

const STEPS = [
  ['x', INSERT, MIN], ['x', INSERT, MAX], ['x', INSERT, INFERRED],
  // the same statement again, other values and other parameter types
  ['x', INSERT, MAX.map((v, i) => (i === 17 ? null : i === 12 ? '' : v))],
  ['x', INSERT, Array(18).fill(null)],
  // microseconds survive only as text: mysql2 builds a binary DATETIME from a JS Date (milliseconds)
  ['x', INSERT, MIN.map((v, i) => (i === 15 ? '2024-02-29 23:59:59.123456' : i === 16 ? '-12:34:56.654321' : v))],
  ['x', `SELECT id, ${COLS} FROM prep_typed ORDER BY id`, []],
  ['x', 'SELECT ? AS a, ? AS b, ? AS c', [T.LONGLONG.unsigned(1n), T.TIME('-00:00:00.000001'), Buffer.from([0])]],
  ['x', 'SELECT ? AS a, ? AS b, ? AS c', [1.25, 'x', null]],
  ['x', 'SELECT ? AS a, ? AS b, ? AS c', [T.DECIMAL('-0.5'), T.DATETIME('2000-01-01 00:00:00.5'), NASTY]],
  ...MAX.concat(MIN).map((v) => ['x', 'SELECT ? AS p', [v]]),
  ['x', 'UPDATE prep_typed SET vc = ? WHERE id = ?', ['changed', 1]],
  ['x', 'UPDATE prep_typed SET vc = ? WHERE id = ?', ['changed', 1]], // matched 1, changed 0
  ['x', 'UPDATE prep_typed SET i = i - ? WHERE id BETWEEN ? AND ?', [T.LONG(1), 2, 4]],
  ['x', 'UPDATE prep_typed SET ti = ? WHERE id = ?', [T.LONG(1000), 1]], // strict mode: error 1264
  ['q', "SET SESSION sql_mode = ''"],
  ['x', 'UPDATE prep_typed SET ti = ? WHERE id = ?', [T.LONG(1000), 1]], // clipped: a warning
  ['q', 'SHOW WARNINGS'],
  ['x', 'SELECT no_such_column FROM prep_typed WHERE id = ?', [1]],
  ['x', 'DELETE FROM prep_typed WHERE id = ?', [5]],
  ['x', INSERT, INFERRED], // insertId after a delete
  // the shapes issue 9 plans, on a governed table inside a transaction
  ['q', 'BEGIN'],
  ['x', `SELECT id, ${COLS} FROM prep_typed WHERE id = ? FOR UPDATE`, [1]],
  ['x', 'UPDATE prep_typed SET i = ?, vc = ?, dc = ? WHERE id = ?', [T.LONG(5), NASTY, '0.5', 1]],
  ['x', 'SELECT i, vc, dc FROM prep_typed WHERE id = ?', [1]],
  ['x', `SELECT id, ${COLS} FROM prep_typed WHERE id = ? FOR UPDATE`, [2]],
  ['x', 'UPDATE prep_typed SET bu = ?, tm = ? WHERE id = ?', [T.LONGLONG.unsigned(1n), T.TIME('-01:02:03.4'), 2]],
  ['q', 'COMMIT'],
  ['x', `SELECT id, ${COLS} FROM prep_typed ORDER BY id`, []],
];

function plain(v) {
  if (Buffer.isBuffer(v)) return `0x${v.toString('hex')}`;
  if (typeof v === 'bigint') return `${v}n`;
  if (v && typeof v === 'object' && !Array.isArray(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

function fieldMeta(f, db) {
  return { catalog: f.catalog, schema: f.schema === db ? '<db>' : f.schema, table: f.table, orgTable: f.orgTable,
    name: f.name, orgName: f.orgName, characterSet: f.characterSet, columnLength: f.columnLength,
    columnType: f.columnType, flags: f.flags, decimals: f.decimals };
}

async function transcript(ep) {
  const db = await L.freshDb('fid', DDL);
  const c = await L.connect(ep, db.name);
  const out = [];
  try {
    for (const [kind, sql, params] of STEPS) {
      try {
        const [res, fields] = kind === 'x' ? await c.execute(sql, params) : await c.query(sql);
        out.push(Array.isArray(res)
          ? { sql, rows: plain(res), fields: fields.map((f) => fieldMeta(f, db.name)) }
          : { sql, ok: plain({ ...res }) });
      } catch (e) {
        if (!e.errno) throw e;
        out.push({ sql, error: [e.errno, e.sqlState, e.sqlMessage.replaceAll(db.name, '<db>')] });
      }
    }
    return out;
  } finally {
    await c.end();
    await db.drop();
  }
}

test(`[${L.via()}] mysql2 execute(): every parameter and column type, OK packets, errors`, async () => {
  const reference = await transcript(L.DIRECT);
  const subject = await transcript(L.endpoint());
  if (process.env.THAW_TEST_DUMP) for (const s of reference) console.log(JSON.stringify(s));
  assert.equal(subject.length, reference.length);
  // sanity of the steps themselves: strict mode refused, non-strict warned
  assert.ok(reference.some((s) => s.error && s.error[0] === 1264), 'no 1264 in strict mode');
  assert.ok(reference.some((s) => s.ok && s.ok.warningStatus === 1), 'no warning in non-strict mode');
  for (let i = 0; i < reference.length; i++) {
    assert.deepEqual(subject[i], reference[i], `step ${i}: ${reference[i].sql}`);
  }
});
