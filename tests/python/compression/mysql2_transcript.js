'use strict';
// One endpoint's transcript of a fixed workload through mysql2 (Node), for
// test_mysql2.py to compare direct with thaw: rows, column definitions, OK
// packet fields and errors, as JSON on stdout. Environment: HOST, PORT, DB,
// COMPRESS ("1": mysql2's compress option). mysql2 comes from tests/node
// (npm ci there; scripts/test.sh does).
const path = require('node:path');
const crypto = require('node:crypto');
const mysql = require(path.join(__dirname, '..', '..', 'node', 'node_modules', 'mysql2', 'promise'));

const env = process.env;
// Deterministic bytes, the same on both sides.
const bytes = (n, seed) => {
  const out = Buffer.alloc(n);
  let off = 0;
  for (let i = 0; off < n; i++) {
    const h = crypto.createHash('sha256').update(`${seed}:${i}`).digest();
    off += h.copy(out, off);
  }
  return out;
};

const shown = (v) => {
  if (Buffer.isBuffer(v)) {
    return v.length > 256 ? `buf[${v.length} ${crypto.createHash('sha256').update(v).digest('hex').slice(0, 16)}]` : `buf:${v.toString('hex')}`;
  }
  if (typeof v === 'string' && v.length > 256) {
    return `str[${v.length} ${crypto.createHash('sha256').update(v).digest('hex').slice(0, 16)}]`;
  }
  if (typeof v === 'bigint') return `big:${v}`;
  if (Array.isArray(v)) return v.map(shown);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shown(x)]));
  return v;
};

const fieldInfo = (f) => f && f.map((c) => ({
  name: c.name, orgName: c.orgName, table: c.table, orgTable: c.orgTable, type: c.columnType,
  length: c.columnLength, flags: c.flags, decimals: c.decimals, charset: c.characterSet,
}));

const STEPS = [
  ['query', 'CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100), b LONGBLOB, d DECIMAL(20,6), dt DATETIME(6))'],
  ['query', "INSERT INTO t (v, d, dt) VALUES ('a', 1.5, '2024-02-29 12:34:56.789012'), ('ü😀', -0.000001, NULL), (NULL, NULL, '1000-01-01')"],
  ['execute', 'INSERT INTO t (v, b, d) VALUES (?, ?, ?)', ['one MiB', bytes(1 << 20, 'mib'), '12345678901234.123456']],
  ['execute', 'INSERT INTO t (v, b) VALUES (?, ?)', ['five MiB', bytes(5 << 20, 'five')]],
  ['query', 'SELECT id, v, LENGTH(b), MD5(b), d, dt FROM t ORDER BY id'],
  ['query', 'SELECT b FROM t WHERE v = ?', ['five MiB']],
  ['execute', 'SELECT id, b FROM t WHERE v = ?', ['one MiB']],
  ['query', "SELECT REPEAT('x', 3000000) AS big, 7 AS after"],
  ['query', 'SELECT seq, MD5(seq), REPEAT(CHAR(65 + seq MOD 26), seq MOD 300) FROM seq_1_to_20000'],
  ['query', 'SELECT 1 AS one; SELECT 2 AS two; SELECT seq FROM seq_1_to_5'],
  ['query', 'SELECT * FROM no_such_table'],
  ['query', 'SELECT 1/0, CAST(\'12abc\' AS INT)'],
  ['query', 'SHOW WARNINGS'],
  ['query', 'UPDATE t SET v = CONCAT(v, \'!\') WHERE id <= 2'],
  ['ping'],
  ['execute', 'SELECT ? AS echoed', [bytes(200000, 'echo')]],
  ['query', 'SELECT \'still fine\''],
];

async function main() {
  const conn = await mysql.createConnection({
    host: env.HOST, port: Number(env.PORT), user: 'root', password: '', database: env.DB,
    compress: env.COMPRESS === '1', multipleStatements: true, supportBigNumbers: true, bigNumberStrings: true,
    dateStrings: true, connectTimeout: 10000, maxPreparedStatements: 100,
  });
  const out = [];
  for (const [kind, sql, params] of STEPS) {
    const step = { kind, sql: sql && sql.slice(0, 80) };
    try {
      if (kind === 'ping') {
        await conn.ping();
        step.ok = true;
      } else {
        const [res, fields] = await conn[kind](sql, params);
        step.result = shown(res);
        step.fields = Array.isArray(fields) && Array.isArray(fields[0]) ? fields.map(fieldInfo) : fieldInfo(fields);
      }
    } catch (e) {
      step.error = { code: e.code, errno: e.errno, sqlState: e.sqlState, message: e.sqlMessage || e.message };
    }
    out.push(step);
  }
  await conn.end();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(`${e.stack}\n`);
  process.exit(1);
});
