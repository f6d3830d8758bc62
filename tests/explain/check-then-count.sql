-- The check-then-freeze flow with a read of another table between the
-- read and the write: the window gate cannot prove it safe (the lock the
-- app took may be what kept that table still), so the session re-locks
-- and compares the captured row before sending it.
BEGIN;
SELECT id, balance, frozen_balance FROM users WHERE id = 8 FOR UPDATE;
-- rows: [{"id": 8, "balance": 5000, "frozen_balance": 616}]
SELECT COUNT(*) FROM compute_freeze_logs WHERE user_id = 8 AND status = 'frozen';
-- rows: [{"COUNT(*)": 1}]
UPDATE users SET frozen_balance = 1232 WHERE id = 8;
COMMIT;
