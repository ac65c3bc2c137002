-- A timed, unattended run: give it after a recipe, e.g.
--   pktgen <EAL args> -- -P -m "1.[0-1]" -f perf/pktgen/line-rate-64.pkt -f perf/pktgen/measure.lua
-- It clears the counters, starts the transmit ports, writes Pktgen's rates
-- once a second, stops the traffic, waits for the last frames, writes the
-- totals (sent, received, lost) and quits Pktgen, so nothing waits on a
-- terminal. Traffic is always stopped before Pktgen exits (net_memif peers
-- can crash when the other side leaves mid-traffic).
--
-- Environment (all optional):
--   PKTGEN_SECS  seconds of traffic (default 10)
--   PKTGEN_TX    ports that send, Pktgen portlist syntax (default "0": hbgw's LAN side)
--   PKTGEN_RX    ports whose receive counters are the result (default "1": hbgw's WAN side)
--   PKTGEN_RATE  percent of the link rate to send at (default: what the recipe set)
--   PKTGEN_AT_START  shell command run just before the traffic starts, e.g.
--                "target/release/hbgw stats --clear --socket /tmp/pg/hbgw.sock"
--                so that hbgw's totals and histograms cover the same interval
--   PKTGEN_AT_STOP   shell command run once the traffic has stopped and drained, e.g.
--                "target/release/hbgw stats --socket /tmp/pg/hbgw.sock > /tmp/pg/hbgw-stats.txt"
--   PKTGEN_OUT   file for the table (default pktgen-rates.txt in Pktgen's working directory)
--   PKTGEN_QUIT  "0" leaves Pktgen running at its prompt afterwards (default: quit)
--
-- While this script runs, Pktgen's main lcore sleeps between samples (Lua's
-- pktgen.delay), so it does not spin on the terminal the way its prompt does.

-- A Lua error in a script given with -f leaves Pktgen at its prompt, where an
-- unattended run would wait for ever; so any error here is caught, written
-- to PKTGEN_OUT and the screen as "measure.lua: error: ...", the traffic is
-- stopped and Pktgen quits all the same.

local path = os.getenv("PKTGEN_OUT") or "pktgen-rates.txt"
local quit = (os.getenv("PKTGEN_QUIT") or "1") ~= "0"
local out = nil

local function run()
    local secs = tonumber(os.getenv("PKTGEN_SECS") or "10") or 10
    local tx = os.getenv("PKTGEN_TX") or "0"
    local rx = os.getenv("PKTGEN_RX") or "1"
    local rate = os.getenv("PKTGEN_RATE")
    if rate then
        local r = tonumber(rate)
        if r == nil or r <= 0 or r > 100 then error("PKTGEN_RATE=" .. rate .. " is not a percentage in (0, 100]", 0) end
    end

    -- "0", "0,1", "0-1" -> {0, 1}
    local function ports(list)
        local t = {}
        for part in string.gmatch(list, "[^,]+") do
            local a, b = string.match(part, "^%s*(%d+)%s*-%s*(%d+)%s*$")
            if a then
                for p = tonumber(a), tonumber(b) do t[#t + 1] = p end
            else
                local p = tonumber(part)
                if p == nil then error("bad port list '" .. list .. "': use e.g. 0 or 0,1 or 0-1", 0) end
                t[#t + 1] = p
            end
        end
        return t
    end

    local txp, rxp = ports(tx), ports(rx)
    local nports = pktgen.portCount()
    for _, p in ipairs(txp) do
        if p >= nports then error(string.format("PKTGEN_TX names port %d, but Pktgen has ports 0..%d", p, nports - 1), 0) end
    end
    for _, p in ipairs(rxp) do
        if p >= nports then error(string.format("PKTGEN_RX names port %d, but Pktgen has ports 0..%d", p, nports - 1), 0) end
    end

    local function sum(stats, plist, field)
        local s = 0
        for _, p in ipairs(plist) do
            if stats[p] then s = s + stats[p][field] end
        end
        return s
    end

    out = assert(io.open(path, "w"))
    out:write(string.format("# %s: tx ports %s, rx ports %s, %d s%s\n", pktgen.info.Pktgen_Version or "?", tx, rx, secs,
        rate and (", rate " .. rate .. "%") or ""))
    out:write(string.format("%4s %14s %14s %10s %10s\n", "s", "tx pps", "rx pps", "tx Mbit/s", "rx Mbit/s"))

    if rate then pktgen.set(tx, "rate", tonumber(rate)) end

    local function shell(what, cmd)
        if cmd and cmd ~= "" then
            local ok = os.execute(cmd)
            if not ok then out:write(string.format("# %s command failed: %s\n", what, cmd)) end
        end
    end

    shell("PKTGEN_AT_START", os.getenv("PKTGEN_AT_START"))
    pktgen.clr()
    pktgen.start(tx)
    local tx_rates, rx_rates = {}, {}
    for s = 1, secs do
        pktgen.delay(1000)
        local r = pktgen.portStats("all", "rate")
        local t, v = sum(r, txp, "pkts_tx"), sum(r, rxp, "pkts_rx")
        tx_rates[#tx_rates + 1], rx_rates[#rx_rates + 1] = t, v
        out:write(string.format("%4d %14d %14d %10d %10d\n", s, t, v, sum(r, txp, "mbits_tx"), sum(r, rxp, "mbits_rx")))
        out:flush()
    end
    pktgen.stop(tx)
    pktgen.delay(1000) -- frames still in rings and in the gateway arrive
    shell("PKTGEN_AT_STOP", os.getenv("PKTGEN_AT_STOP"))

    local function median(t)
        if #t == 0 then return 0 end
        local c = {}
        for i, v in ipairs(t) do c[i] = v end
        table.sort(c)
        local m = math.floor((#c + 1) / 2)
        if #c % 2 == 1 then return c[m] end
        return (c[m] + c[m + 1]) // 2
    end

    local tot = pktgen.portStats("all", "port")
    local sent, recv = sum(tot, txp, "opackets"), sum(tot, rxp, "ipackets")
    local lost = sent - recv
    out:write(string.format("median (first second skipped): tx %d pps, rx %d pps\n",
        median({ table.unpack(tx_rates, 2) }), median({ table.unpack(rx_rates, 2) })))
    out:write(string.format("total: sent %d, received %d, lost %d (%.3f%%)\n", sent, recv, lost,
        sent > 0 and 100 * lost / sent or 0))

    -- End-to-end probes (latency.pkt): min/avg/max over the run, per receiving port.
    local ps = pktgen.pktStats(rx)
    for _, p in ipairs(rxp) do
        local lat = ps[p] and ps[p].latency
        if lat and lat.num_pkts > 0 then
            out:write(string.format("latency probes received on port %d: %d, min %.1f us, avg %.1f us, max %.1f us\n",
                p, lat.num_pkts, lat.min_us, lat.avg_us, lat.max_us))
        end
    end
end

local ok, err = pcall(run)
if not ok then
    pcall(pktgen.stop, "all")
    local msg = "measure.lua: error: " .. tostring(err)
    if out == nil then out = io.open(path, "w") end
    if out then out:write(msg .. "\n") end
    io.stderr:write(msg .. "\n")
    print(msg)
end
if out then out:close() end

if quit then
    pktgen.quit()
end
