-- The hand fix: one conditional UPDATE (the check in the WHERE), log,
-- commit. The row lock lives from the UPDATE to the end of COMMIT.
require("hotrow_common")

function event()
   con:query("BEGIN")
   con:query("UPDATE users SET frozen_balance = frozen_balance + 1 WHERE id = 1 AND balance - frozen_balance >= 1")
   con:query(LOG)
   con:query("COMMIT")
end
