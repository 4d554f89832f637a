-- One DR push per request, each with its own messageid. Optional pacing: wrk ... -- DELAY_MS
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  counter = 0
  prefix = "bench-" .. thread_id .. "-" .. os.time() .. "-"
  pause = tonumber(args[1] or "0")
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
end

function request()
  counter = counter + 1
  local body = "phone=8615088888888&countryCode=86&duration=10&voice_type=0&messageid="
    .. prefix .. counter
    .. "&basic_price=0.005&second=10&cycle=60&size=1&customer_price=0.036"
    .. "&start_time=2020-12-01+00%3A00%3A00&end_time=2020-12-01+00%3A00%3A10"
    .. "&result=Successful+connection&hangup_cause=NORMAL_CLEARING"
    .. "&hangup_disposition=send_bye&ivr_result="
  return wrk.format("POST", "/nxcloud/voice/dr", headers, body)
end

function delay()
  return pause
end
