"""The run report: report.json/report.html (`run_report`) and the distributions it shows (`summary`)."""
