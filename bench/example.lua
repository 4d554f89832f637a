-- The provider's example push as a GET (its spaces %-encoded), each with its own messageid.
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  counter = 0
  prefix = "cpu-" .. thread_id .. "-" .. os.time() .. "-"
end

function request()
  counter = counter + 1
  local query = "phone=8615088888888&countryCode=86&duration=10&voice_type=0&messageid="
    .. prefix .. counter
    .. "&basic_price=0.005&second=10&cycle=60&size=1&customer_price=0.036"
    .. "&start_time=2020-12-01%2000:00:00&end_time=2020-12-01%2000:00:10"
    .. "&result=Successful%20connection&hangup_cause=NORMAL_CLEARING"
    .. "&hangup_disposition=send_bye&ivr_result="
  return wrk.format("GET", "/nxcloud/voice/dr?" .. query)
end
