-- tests/python/legacy/app.py, check_and_freeze_two_session, as it runs
-- through thaw (SQLAlchemy 2.0 async ORM + aiomysql, autocommit off):
-- connection 789 checks the balance under FOR UPDATE and keeps its
-- transaction open; connection 790 freezes. Direct, 790's SKIP LOCKED read
-- finds the row locked, its plain re-read and UPDATE follow, and the UPDATE
-- waits on 789's lock until 1205 (src/rules/testdata/legacy-app-trace.sql).
-- Through thaw neither read locks, so the SKIP LOCKED read returns the row
-- and the app skips the plain re-read.

-- connection 789
SET AUTOCOMMIT = 0;
SET NAMES utf8mb4;
ROLLBACK;
SELECT users.id, users.username, users.balance, users.frozen_balance, users.updated_at 
FROM users 
WHERE users.id = 8 FOR UPDATE;
-- rows: [{"id": 8, "username": "bob", "balance": 5000, "frozen_balance": 616, "updated_at": "2026-12-01 13:45:08"}]

-- connection 790
SET AUTOCOMMIT = 0;
SET NAMES utf8mb4;
ROLLBACK;
SELECT users.id, users.username, users.balance, users.frozen_balance, users.updated_at 
FROM users 
WHERE users.id = 8 FOR UPDATE SKIP LOCKED;
-- rows: [{"id": 8, "username": "bob", "balance": 5000, "frozen_balance": 616, "updated_at": "2026-12-01 13:45:08"}]
INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES ('5f324a7861f642c8bb02ae57d556eda3', 8, 616, 'frozen') RETURNING compute_freeze_logs.id, compute_freeze_logs.created_at;
-- rows: [{"id": 1, "created_at": "2026-12-01 13:45:09"}]
UPDATE users SET frozen_balance=1232, updated_at=now() WHERE users.id = 8;
COMMIT;
ROLLBACK;

-- connection 789
ROLLBACK;
ROLLBACK;
