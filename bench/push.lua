-- One DR push per request, each with its own messageid.
-- Optional pacing and padding: wrk ... -- DELAY_MS [PAD_BYTES] (an extra field of PAD_BYTES)
-- [get] (the push as the provider's example sends it: a GET, its fields in the query)
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  counter = 0
  prefix = "bench-" .. thread_id .. "-" .. os.time() .. "-"
  pause = tonumber(args[1] or "0")
  local size = tonumber(args[2] or "0")
  padding = size > 0 and ("&note=" .. string.rep("x", size)) or ""
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
  get = args[3] == "get"
end

function request()
  counter = counter + 1
  local body = "phone=8615088888888&countryCode=86&duration=10&voice_type=0&messageid="
    .. prefix .. counter
    .. "&basic_price=0.005&second=10&cycle=60&size=1&customer_price=0.036"
    .. "&start_time=2020-12-01+00%3A00%3A00&end_time=2020-12-01+00%3A00%3A10"
    .. "&result=Successful+connection&hangup_cause=NORMAL_CLEARING"
    .. "&hangup_disposition=send_bye&ivr_result=" .. padding
  if get then
    return wrk.format("GET", "/nxcloud/voice/dr?" .. body)
  end
  return wrk.format("POST", "/nxcloud/voice/dr", headers, body)
end

function delay()
  return pause
end
