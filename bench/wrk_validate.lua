-- wrk script for bench/wrk_load.py: one validation per request, each with its own body.
--
-- Environment (set by wrk_load.py):
--   WRK_ADDRS         host:port per wrk thread, comma-separated (thread n sends to the n-th)
--   WRK_PATH          the path to POST to
--   WRK_CONTENT_TYPE  the bodies' media type
--   WRK_AUTH          the Authorization header, or empty
--   WRK_ACCEPTED      a Lua pattern that the reply body of an accepted validation contains
-- Arguments after "--": one file per thread, one request body per line; each is sent once.
-- When a thread has sent its last body it stops, and says so ("ran_out"); a reply that comes
-- after that is not counted.

local threads = {}
local addresses = {}
for address in string.gmatch(os.getenv("WRK_ADDRS"), "[^,]+") do
  addresses[#addresses + 1] = address
end

function setup(thread)
  local n = #threads + 1
  local host, port = string.match(addresses[n], "^(.+):(%d+)$")
  thread.addr = wrk.lookup(host, port)[1]
  thread:set("id", n)
  threads[n] = thread
end

function init(args)
  bodies = {}
  for line in io.lines(args[id]) do
    bodies[#bodies + 1] = line
  end
  sent = 0
  accepted = 0
  refused = 0
  not_ok = 0
  ran_out = 0
  last_refusal = ""
  pattern = os.getenv("WRK_ACCEPTED")
  headers = {["Content-Type"] = os.getenv("WRK_CONTENT_TYPE")}
  local auth = os.getenv("WRK_AUTH")
  if auth ~= nil and auth ~= "" then
    headers["Authorization"] = auth
  end
  path = os.getenv("WRK_PATH")
end

function request()
  if sent >= #bodies then
    ran_out = 1
    wrk.thread:stop()
    return wrk.format("GET", "/")  -- never counted: replies after running out are ignored
  end
  sent = sent + 1
  return wrk.format("POST", path, headers, bodies[sent])
end

function response(status, _, body)
  if ran_out == 1 then
    return
  end
  if status ~= 200 then
    not_ok = not_ok + 1
    last_refusal = "HTTP " .. status
  elseif string.find(body, pattern) then
    accepted = accepted + 1
  else
    refused = refused + 1
    last_refusal = string.sub(body, 1, 120)
  end
end

function done(summary, latency, _)
  local sum = {accepted = 0, refused = 0, not_ok = 0, ran_out = 0}
  local last = ""
  for _, thread in ipairs(threads) do
    for key, _ in pairs(sum) do
      sum[key] = sum[key] + thread:get(key)
    end
    if thread:get("last_refusal") ~= "" then
      last = thread:get("last_refusal")
    end
  end
  local errors = summary.errors
  io.write(string.format(
    "RESULT accepted=%d refused=%d not_ok=%d ran_out=%d socket_errors=%d "
      .. "duration_us=%d p50_us=%d p99_us=%d\n",
    sum.accepted, sum.refused, sum.not_ok, sum.ran_out,
    errors.connect + errors.read + errors.write + errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
  io.write("LAST_REFUSAL " .. string.gsub(last, "\n", " ") .. "\n")
end
