-- The hot-row freeze of issue 12, shared by hotrow_legacy.lua and
-- hotrow_handfix.lua (run by bench/hotrow.sh, which creates the schema):
-- every transaction freezes 1 from the SAME user (id 1), whose balance is
-- large enough that no freeze is ever refused, and logs it.
function thread_init()
   drv = sysbench.sql.driver()
   con = drv:connect()
end

function thread_done()
   con:disconnect()
end

LOG = "INSERT INTO freeze_logs (user_id, amount) VALUES (1, 1)"
