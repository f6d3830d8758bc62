'use strict';
// Not issue 9 itself, but what every Node app meets first: mysql2 (so
// Sequelize) and the mariadb connector send CLIENT_IGNORE_SPACE in the
// handshake by default, and the server then runs the session with
// sql_mode IGNORE_SPACE. A plain text keyed `SELECT ... FOR UPDATE` of a
// governed table, from such a session, must still be unlocked through thaw.
// Direct, a second session's read waits for the first one's lock.
const test = require('node:test');
const assert = require('node:assert/strict');
const mysql = require('mysql2/promise');
const mariadb = require('mariadb');
const L = require('./lib');

const READ = 'SELECT id, balance, frozen_balance FROM users WHERE id = 8 FOR UPDATE';

const DRIVERS = {
  // flags: '' keeps mysql2's default capability flags
  mysql2: (ep, db) => mysql.createConnection({ ...L.mysql2Opts(ep, db), flags: '' }),
  mariadb: (ep, db) => mariadb.createConnection({ host: ep.host, port: ep.port, user: 'root', password: '', database: db }),
};

for (const [name, open] of Object.entries(DRIVERS)) {
  test(`[${L.via()}] ${name} default session: a text FOR UPDATE ${L.via() === 'thaw' ? 'is unlocked' : 'waits'}`, async () => {
    const db = await L.freshDb('sess', L.LEGACY_SCHEMA);
    const a = await open(L.endpoint(), db.name);
    const b = await open(L.endpoint(), db.name);
    try {
      await db.query('INSERT INTO users (id, username, balance) VALUES (8, ?, 100)', ['user8']);
      const mode = await a.query('SELECT @@SESSION.sql_mode AS m');
      const sqlMode = (Array.isArray(mode[0]) ? mode[0][0] : mode[0]).m;
      console.log(`${name} session sql_mode: ${sqlMode}`);
      assert.match(sqlMode, /IGNORE_SPACE/, 'the driver no longer sets CLIENT_IGNORE_SPACE: this test is moot');
      await a.query('BEGIN');
      await a.query(READ);
      await b.query('BEGIN');
      const bRead = b.query(READ);
      const first = await Promise.race([bRead.then(() => 'read'), L.sleep(500).then(() => 'blocked')]);
      await a.query('ROLLBACK');
      await bRead;
      await b.query('ROLLBACK');
      assert.equal(first, L.via() === 'direct' ? 'blocked' : 'read');
    } finally {
      await a.end().catch(() => {});
      await b.end().catch(() => {});
      await db.drop();
    }
  });
}
