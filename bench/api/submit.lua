-- wrk script: POST /v1/jobs with a realistic job document (the token comes from the
-- environment so it never appears on a command line).
wrk.method = "POST"
wrk.body = '{"name":"bench-job","kind":"training","queue":"default","priority":"normal",'
  .. '"workers":2,"resources":{"cpu":"8","memory":"64Gi","gpu":8,"gpu_models":["H100","A100"]},'
  .. '"workload":{"builtin":"gpt","args":{"steps":2000}},"max_runtime":"4h","retries":2,'
  .. '"labels":{"team":"nlp"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TRAINYARD_TOKEN")
