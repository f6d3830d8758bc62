-- The legacy flow: lock the row, read it, decide in the app, write the
-- new frozen balance as an ABSOLUTE value computed from the read, log,
-- commit. Through thaw the lock is cut and the write becomes a guarded
-- delta (held back to COMMIT with defer_writes).
require("hotrow_common")

function event()
   con:query("BEGIN")
   local row = con:query("SELECT balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE"):fetch_row()
   local balance, frozen = tonumber(row[1]), tonumber(row[2])
   if balance - frozen < 1 then
      error("user 1 ran out of balance: the benchmark needs a larger one")
   end
   con:query(string.format("UPDATE users SET frozen_balance = %d WHERE id = 1", frozen + 1))
   con:query(LOG)
   con:query("COMMIT")
end
